// P70 max_concurrent_jobs. A rule that allows with `max_concurrent_jobs: N` lets at most N of a
// tenant's jobs it allowed be out at once (from their first dispatch to their terminal state,
// retries included). A job that finds its group's slots taken stays PENDING in the group's
// queue, its submit acked: it costs nothing while it waits, and the replayer leader re-drives
// the longest waiters (Check first, like any dispatch) when slots free up (slotTurn). The
// store's terminal write gives a slot back; a member a crash left behind is dropped here once
// its job is seen terminal or gone.
import { slotGroup, TERMINAL_STATES, type JobRecord } from '@cordum/job-store';
import type { HandlerOutcome } from '@cordum/bus';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';
import { BUSY_NAK_MS } from './job-lock';

/**
 * How far a waiting job's orphan clock moves: the sweep re-drives it only if it was somehow
 * dropped from its group's queue (the leader wakes it otherwise), not every pendingAge.
 */
export const SLOT_WAIT_RECHECK_MS = 5 * 60_000;
/** Holders of a group read per leader turn (a limit above this is counted from the first ones). */
const HOLDERS_READ = 1_000;

export interface Concurrency {
  group: string;
  limit: number;
}

export function concurrencyOf(job: JobRecord, ruleId: string, limit: number | undefined): Concurrency | undefined {
  return limit === undefined ? undefined : { group: slotGroup(job.tenant, ruleId), limit };
}

/**
 * Before a PENDING job's dispatch: true when it may go (no limit, or it holds a slot of its
 * group). A job queued or holding a slot under a group its current decision no longer names
 * (the policy changed) leaves that group first.
 */
export async function takeSlot(ctx: SchedulerContext, job: JobRecord, c: Concurrency | undefined): Promise<boolean> {
  if (job.concurrency && job.concurrency.group !== c?.group) await leaveGroup(ctx, job);
  return c === undefined || ctx.store.acquireSlot(c.group, job.id, c.limit);
}

/** Gives back a PENDING job's slot or queue place (it waits for something else, or its rule changed). */
export async function leaveGroup(ctx: SchedulerContext, job: JobRecord): Promise<void> {
  if (job.concurrency) await ctx.store.dropSlotMembers(job.concurrency.group, [job.id], [job.id]);
}

/** The job waits in its group's queue: recorded on the job (so its terminal write leaves the queue), submit acked. */
export async function slotWait(ctx: SchedulerContext, lease: Lease, job: JobRecord, c: Concurrency): Promise<HandlerOutcome> {
  ctx.metrics.slotWaits.inc();
  if (job.concurrency?.group !== c.group || job.concurrency.limit !== c.limit) {
    const p = await ctx.store.patchJob(job.id, job.state, { token: lease.token, patch: { concurrency: c } });
    if (!p.ok) return p.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : { kind: 'ack' };
  }
  await ctx.store.touchOrphanClock(job.id, job.state, Date.now() + SLOT_WAIT_RECHECK_MS);
  ctx.logger.info('max_concurrent_jobs reached, job waits for a slot', { job_id: job.id, group: c.group, limit: c.limit });
  return { kind: 'ack' };
}

/**
 * One replayer-leader turn over the groups with waiters: holders whose job is terminal or gone
 * are dropped, and as many of the longest waiters as there are free slots are filed in
 * `job:retry` due now (the drain that follows dispatches them; the acquire script lets only the
 * first `free` waiters in). A waiter that is no longer PENDING (held for approval, dispatched
 * under another decision, ended) leaves the queue. Answers the number woken.
 */
export async function slotTurn(ctx: SchedulerContext, now: number): Promise<number> {
  let woken = 0;
  for (const group of await ctx.store.listSlotGroups()) {
    const limit = (await ctx.store.slotLimit(group)) ?? 0;
    const holders = await ctx.store.slotHolders(group, HOLDERS_READ);
    const held = await ctx.store.jobStates(holders);
    const gone = holders.filter((_, i) => {
      const s = held[i];
      return s === null || s === undefined || TERMINAL_STATES.has(s);
    });
    const head = await ctx.store.slotWaiters(group, limit - (holders.length - gone.length));
    const waiting = await ctx.store.jobStates(head);
    const wake = head.filter((_, i) => waiting[i] === 'PENDING');
    const left = head.filter((_, i) => waiting[i] !== 'PENDING');
    await ctx.store.dropSlotMembers(group, gone, left);
    await Promise.all(wake.map((id) => ctx.store.scheduleRetry(id, now)));
    if (wake.length > 0) {
      woken += wake.length;
      ctx.metrics.slotWakes.inc(wake.length);
      ctx.logger.info('slots free, waiting jobs re-driven', { group, jobs: wake.length });
    }
    await ctx.store.dropSlotGroupIfIdle(group);
  }
  return woken;
}
