// P70 max_concurrent_jobs. A rule that allows with `max_concurrent_jobs: N` lets at most N of a
// tenant's jobs it allowed be out at once (from their first dispatch to their terminal state,
// retries included). A job that finds its group's slots taken stays PENDING in the group's
// queue, its submit acked: no timer of its own while it waits, and the replayer leader re-drives
// the longest waiters (Check first, like any dispatch) when slots free up (slotTurn). The
// store's terminal write gives a slot back; a holder a crash left behind is dropped here once
// its job is seen terminal, gone, held for approval, or PENDING long after it took the slot.
import { slotGroup, TERMINAL_STATES, type JobRecord, type JobState } from '@cordum/job-store';
import type { HandlerOutcome } from '@cordum/bus';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { SchedulerContext } from './context';
import { safeMarginMs } from './dispatch';
import { forEachLimit } from './for-each';
import { BUSY_NAK_MS, readLocked, withJobLock } from './job-lock';

/**
 * How far a waiting job's orphan clock moves. The orphan sweep leaves a job it finds queued alone
 * (settleSlotWait) and only re-drives one that was somehow dropped from its group's queue.
 */
export const SLOT_WAIT_RECHECK_MS = 5 * 60_000;
/** Holders of a group read per leader turn (a limit above this is counted from the first ones). */
const HOLDERS_READ = 1_000;
/** Groups looked at in parallel per leader turn. */
const GROUPS_IN_FLIGHT = 8;

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
export async function takeSlot(ctx: SchedulerContext, lease: Lease, job: JobRecord, c: Concurrency | undefined): Promise<boolean> {
  if (job.concurrency && job.concurrency.group !== c?.group) await leaveGroup(ctx, lease, job);
  return c === undefined || ctx.store.acquireSlot(c.group, job.id, c.limit);
}

/**
 * Gives back a PENDING job's slot or queue place (it waits for a worker now, or its rule changed).
 * Only while the lease is safe (D3): a replica that lost the job's lock must not take back the
 * slot of an attempt another replica has dispatched since.
 */
export async function leaveGroup(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<void> {
  if (job.concurrency && lease.safeToAct(safeMarginMs(lease.ttlMs))) await ctx.store.dropSlotMembers(job.concurrency.group, [job.id], [job.id]);
}

/** The job waits in its group's queue: recorded on the job (so its terminal write leaves the queue), submit acked. */
export async function slotWait(ctx: SchedulerContext, lease: Lease, job: JobRecord, c: Concurrency): Promise<HandlerOutcome> {
  ctx.metrics.slotWaits.inc();
  if (job.concurrency?.group !== c.group || job.concurrency.limit !== c.limit) {
    const p = await ctx.store.patchJob(job.id, job.state, { token: lease.token, patch: { concurrency: c } });
    if (!p.ok) return p.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : { kind: 'ack' };
  }
  await ctx.store.touchOrphanClock(job.id, job.state, clusterNow() + SLOT_WAIT_RECHECK_MS);
  ctx.logger.info('max_concurrent_jobs reached, job waits for a slot', { job_id: job.id, group: c.group, limit: c.limit });
  return { kind: 'ack' };
}

/**
 * The orphan sweep found a PENDING job that is queued for a slot: not an orphan (the leader wakes
 * it), so its clock moves on instead of a Check being spent and a lost job counted. true when queued.
 */
export async function settleSlotWait(ctx: SchedulerContext, job: JobRecord): Promise<boolean> {
  if (job.state !== 'PENDING' || !job.concurrency || !(await ctx.store.isSlotWaiter(job.concurrency.group, job.id))) return false;
  await ctx.store.touchOrphanClock(job.id, job.state, clusterNow() + SLOT_WAIT_RECHECK_MS);
  return true;
}

/**
 * A holder that holds its slot for nothing: its job ended or is gone (a crash between its terminal
 * write and the index move), is held for approval, or is PENDING long after it took or last kept
 * the slot (it took one, then its dispatch write never came: a crash, a lost lease). A PENDING
 * holder within a lock TTL of its look may be dispatching right now, so it keeps its slot.
 */
function holdsForNothing(state: JobState | null | undefined, heldSince: number, now: number, lockTtlMs: number): boolean {
  if (state === null || state === undefined || TERMINAL_STATES.has(state) || state === 'APPROVAL_REQUIRED') return true;
  return state === 'PENDING' && now - heldSince > lockTtlMs;
}

/**
 * One replayer-leader turn over the groups with waiters: holders that hold for nothing are
 * dropped, and as many of the longest waiters as there are free slots are filed in `job:retry`
 * due now, unless a retry of theirs is already filed (a throttle's later one is kept); the drain
 * that follows dispatches them, and the acquire script lets only the first `free` waiters in. A
 * waiter that is no longer PENDING (held for approval, dispatched under another decision, ended)
 * leaves the queue. Answers the number woken.
 *
 * What the turn read may be old by the time it acts (a slow round trip, a GC pause, a leader
 * frozen and resumed), and a job may take or keep its place again meanwhile: a holder judged idle
 * is dropped only while its score is still the one read (its job's next look moves it, and that
 * look is followed by a dispatch), and the free slots are counted from the holders actually
 * dropped. A waiter keeps its score while it waits, so one found neither PENDING nor ended
 * leaves the queue under its job lock, after a re-read: held for approval at the read, it may be
 * back in line by now, in the place it had (slot-acquire-2.lua keeps a waiter's first score).
 */
export async function slotTurn(ctx: SchedulerContext, now: number): Promise<number> {
  let woken = 0;
  await forEachLimit(await ctx.store.listSlotGroups(), GROUPS_IN_FLIGHT, async (group) => {
    const [limit, holders] = await Promise.all([ctx.store.slotLimit(group), ctx.store.slotHolders(group, HOLDERS_READ)]);
    const held = await ctx.store.jobStates(holders.map((h) => h.id));
    const idle = holders.filter((h, i) => holdsForNothing(held[i], h.score, now, ctx.config.jobLockTtlMs));
    const dropped = await ctx.store.dropIdleSlotHolders(group, idle);
    const head = await ctx.store.slotWaiters(group, (limit ?? 0) - (holders.length - dropped));
    const waiting = await ctx.store.jobStates(head);
    const ended = head.filter((_, i) => hasEnded(waiting[i]));
    const moved = head.filter((_, i) => waiting[i] !== 'PENDING' && !hasEnded(waiting[i]));
    await Promise.all([ctx.store.dropSlotMembers(group, [], ended), ...moved.map((id) => leaveQueueIfNotBack(ctx, group, id))]);
    const filed = await ctx.store.wakeWaiters(head.filter((_, i) => waiting[i] === 'PENDING'), now);
    if (filed > 0) {
      woken += filed;
      ctx.metrics.slotWakes.inc(filed);
      ctx.logger.info('slots free, waiting jobs re-driven', { group, jobs: filed });
    }
    await ctx.store.dropSlotGroupIfIdle(group);
  });
  return woken;
}

/** A job that ended or is gone: it never takes or keeps a place again. */
function hasEnded(state: JobState | null | undefined): boolean {
  return state === null || state === undefined || TERMINAL_STATES.has(state);
}

/**
 * A waiter the turn read in another state than PENDING (held for approval, moved on under another
 * decision) leaves the queue unless, re-read under its lock, it is PENDING again: then it is back
 * in line (approved, its submit on the way or its look done), in its place, and the next turn
 * wakes it. Under the lock nothing else can queue it meanwhile (a look is a drive, under the same
 * lock); the drop is made only while the lease is safe (D3). A busy lock leaves it to the next turn.
 */
async function leaveQueueIfNotBack(ctx: SchedulerContext, group: string, id: string): Promise<void> {
  await withJobLock(ctx, id, async (lease) => {
    const job = await readLocked(ctx, id);
    if (job?.state === 'PENDING') return;
    if (lease.safeToAct(safeMarginMs(lease.ttlMs))) await ctx.store.dropSlotMembers(group, [], [id]);
  });
}
