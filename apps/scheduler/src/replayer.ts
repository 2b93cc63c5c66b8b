// Pending replayer (BEHAVIOURS §1.8, D8, D13), one leader `cordum:replayer:pending`.
// Each turn (SCHEDULER_REPLAY_INTERVAL):
//   1. due `job:retry` entries (no-worker waits, RETRYING backoffs) are driven
//      through the normal intake/dispatch path under the job lock;
//   2. PENDING / SCHEDULED / RETRYING jobs older than SCHEDULER_PENDING_REPLAY_AGE
//      with no retry entry are orphans: a lost submit, a submit whose message
//      ran out of deliveries (D8), an owner that died between two writes; a
//      PENDING job whose submit may still be queued in the stream is not (P35). They
//      are driven directly (no republish: JetStream's duplicate window would
//      swallow a republish with the same D9 msg id) and counted in
//      `cordum_scheduler_orphan_replayed_total`.
// An outcome that asks to retry later (NAK) re-files the job in `job:retry`.
// First of all, JobCancels owed to workers past their due time are sent (P134, cancels.ts).
// Before both, parked topics (P15): jobs waiting on a topic nobody served are
// moved back to `job:retry` once a worker serves it, or failed at their bound;
// and concurrency groups (P70): the longest waiters of a group with free slots
// are moved to `job:retry` (slots.ts).
import { subjects, type HandlerOutcome } from '@cordum/bus';
import { TERMINAL_STATES, type JobRecord, type JobState, type ScoredId } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import { QUEUE, type SchedulerContext } from './context';
import { forEachLimit } from './for-each';
import { errorText } from '@cordum/service-kit';
import { sendOwedCancels } from './cancels';
import { republishAttempt } from './dispatch';
import { driveJob } from './intake';
import { readLocked, withJobLock } from './job-lock';
import { currentWait, failNoWorker, parkPlan } from './no-worker';
import { candidates, isOverloaded, topicServed } from './routing';
import { settleSlotWait, slotTurn } from './slots';
import type { WaitingJob } from './capacity-waiters';

const LIMIT = 200;
/** Hints a freed worker slot tries before it is left to the other ways a waiting job goes (P225). */
const CAPACITY_HINTS_TRIED = 3;
/** Parked jobs moved back to `job:retry` per topic and turn once a worker serves the topic. */
const UNPARK_BATCH = 1_000;
const CONCURRENCY = 16;
const ORPHAN_STATES: JobState[] = ['PENDING', 'SCHEDULED', 'RETRYING'];

export async function replayOnce(ctx: SchedulerContext): Promise<{ retried: number; orphans: number; unparked: number; expired: number; woken: number; cancelsSent: number }> {
  const now = clusterNow();
  // Its own failure (Redis away) must not cost the turn's other work, which would fail alone if it must.
  const cancelsSent = await sendOwedCancels(ctx, now).catch((err: unknown) => {
    ctx.logger.warn('owed JobCancels not sent this turn', { err: errorText(err) });
    return 0;
  });
  const { unparked, expired } = await parkedTurn(ctx, now);
  const woken = await slotTurn(ctx, now);
  const due = await ctx.store.listRetryDue(now, LIMIT);
  let retried = 0;
  await forEachLimit(due, CONCURRENCY, async (e) => {
    // Removed first: if we die mid-drive, the orphan sweep below still finds the job. Only the
    // entry as read (P338): one re-filed since (this pass outlived its leadership, and another
    // leader drove the job, whose new attempt failed and filed its backoff) is left to its time.
    if (!(await ctx.store.takeRetry(e.id, e.score))) return;
    if (await drive(ctx, e.id, null)) {
      retried += 1;
      ctx.metrics.orphanReplayed.inc({ reason: 'retry' });
    }
  });
  let orphans = 0;
  for (const state of ORPHAN_STATES) {
    let old = await ctx.store.listActive(state, now - ctx.config.replay.pendingAgeMs, LIMIT);
    if (state === 'PENDING' && old.length > 0) old = await notQueued(ctx, old);
    await forEachLimit(old, CONCURRENCY, async (e: ScoredId) => {
      if (await ctx.store.hasRetry(e.id)) {
        // A timed wait, not an orphan. Move it to the back of the index so a long queue of
        // waiting jobs never hides real orphans behind the scan LIMIT (a job that moved on
        // meanwhile gets a stale entry here, which the next look repairs).
        await ctx.store.reindex(e.id, state, state, clusterNow());
        return;
      }
      if (await drive(ctx, e.id, state)) {
        orphans += 1;
        ctx.metrics.orphanReplayed.inc({ reason: 'lost' });
        ctx.logger.info('orphan job replayed', { job_id: e.id, state });
      }
    });
  }
  return { retried, orphans, unparked, expired, woken, cancelsSent };
}

/**
 * P35: under a backlog a PENDING job can wait in the submit stream longer than pendingAge and
 * still be on its way, not lost. The stream hands out submits in order, so a job whose PENDING
 * entry is older than the newest submit delivered so far (less QUEUED_MARGIN_MS for the gateway's
 * publish after its create and for clocks) has had its submit delivered; a newer one may still be
 * queued or in a replica's hands, and is left to its message. Without this, a backlog past
 * pendingAge was driven here LIMIT jobs a turn ahead of its messages, each counted and logged as
 * a lost orphan, and each message then cost a lock and a read to find its job done. A bus that
 * does not answer leaves the sweep as it was (every old job is a candidate): a job found here
 * twice is still driven once, under its lock.
 */
const QUEUED_MARGIN_MS = 5_000;

async function notQueued(ctx: SchedulerContext, old: ScoredId[]): Promise<ScoredId[]> {
  let newestDeliveredAt: number | null;
  try {
    ({ newestDeliveredAt } = await ctx.bus.backlog(QUEUE, subjects.submit));
  } catch (err) {
    ctx.logger.warn('submit backlog unknown, orphan sweep takes every old PENDING job', { err: (err as Error).message });
    return old;
  }
  if (newestDeliveredAt === null) return old;
  const horizon = newestDeliveredAt - QUEUED_MARGIN_MS;
  return old.filter((e) => e.score < horizon);
}

/**
 * P15: parked topics. A topic that has a live worker again has its parked jobs moved to `job:retry`
 * due now (UNPARK_BATCH per turn), so the drain above dispatches them through the normal path
 * (Check first); on a topic still unserved only the jobs whose bound passed are read, and failed
 * `no_workers`. Nothing is done per waiting job otherwise.
 */
async function parkedTurn(ctx: SchedulerContext, now: number): Promise<{ unparked: number; expired: number }> {
  let unparked = 0;
  let expired = 0;
  const live = ctx.workers.live();
  for (const topic of await ctx.store.listParkedTopics()) {
    if (topicServed(ctx.pools(), live, topic)) {
      const batch = await ctx.store.listParked(topic, Infinity, UNPARK_BATCH);
      await ctx.store.unpark(topic, batch.map((e) => e.id), now);
      unparked += batch.length;
      if (batch.length > 0) ctx.logger.info('a worker serves the topic again, parked jobs re-driven', { topic, jobs: batch.length });
    } else {
      const due = await ctx.store.listParked(topic, now, LIMIT);
      const kept = new Set<string>();
      await forEachLimit(due, CONCURRENCY, async (e) => {
        if (await expire(ctx, e.id, topic, kept)) expired += 1;
      });
      await ctx.store.unpark(topic, due.filter((e) => !kept.has(e.id)).map((e) => e.id));
    }
    await ctx.store.dropParkedTopicIfEmpty(topic);
  }
  return { unparked, expired };
}

/**
 * A parked job whose bound passed: FAILED `no_workers` with the tries its schedule would have
 * made. The listing was read before the lock: a leader frozen since may find the job unparked by
 * its successor (a worker came) and since run, retried or parked again for a new wait. So under
 * the lock its entry must still be there and past its expiry, and the topic still unserved;
 * otherwise nothing is done, and an entry parked again, or on a topic served again, is `kept`
 * (left for the next turn). P164.
 */
function expire(ctx: SchedulerContext, id: string, topic: string, kept: Set<string>): Promise<boolean> {
  return underJobLock(ctx, id, 'expiring a parked job failed', async (lease) => {
    const job = await readLocked(ctx, id);
    if (!job || (job.state !== 'PENDING' && job.state !== 'RETRYING')) return false;
    const expiresAt = await ctx.store.parkedExpiry(topic, id);
    if (expiresAt === null) return false;
    if (expiresAt > clusterNow() || topicServed(ctx.pools(), ctx.workers.live(), topic)) {
      kept.add(id);
      return false;
    }
    await failParked(ctx, lease, job);
    return true;
  });
}

function failParked(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<HandlerOutcome> {
  const wait = currentWait(job, job.updatedAt);
  return failNoWorker(ctx, lease, job, wait, parkPlan(Math.max(1, wait.tries), job.updatedAt, wait.since, ctx.config.replay).tries);
}

/**
 * A job the orphan sweep finds parked (P15) is no orphan, whatever its age: parking moved its
 * orphan clock to its expiry, and a backlog expiring faster than the LIMIT parked jobs per turn
 * above is reached by the sweep a pendingAge later. Re-driving it would count a try and park it
 * again with a new plan, past its bound, at a Check per job. On a topic served again it is
 * unparked here as the turn above would (to `job:retry` due now, its clock back to now): the turn
 * only reaches jobs whose topic is in `job:parked:topics`, so a job whose topic entry was lost
 * (a cleanup racing its park) would otherwise stay parked for good, its clock moved on at every
 * sweep. On a topic still unserved, past its expiry it fails here as above; before, its clock
 * goes back to the expiry. true when the job was parked.
 */
async function settleParked(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<boolean> {
  const expiresAt = await ctx.store.parkedExpiry(job.topic, job.id);
  if (expiresAt === null) return false;
  const now = clusterNow();
  if (topicServed(ctx.pools(), ctx.workers.live(), job.topic)) {
    await ctx.store.unpark(job.topic, [job.id], now);
    ctx.logger.info('orphan sweep found a job parked on a served topic, re-driven', { job_id: job.id, topic: job.topic });
    return true;
  }
  if (expiresAt > now) {
    await ctx.store.touchOrphanClock(job.id, job.state, expiresAt);
    return true;
  }
  await failParked(ctx, lease, job);
  await ctx.store.unpark(job.topic, [job.id]);
  return true;
}

/**
 * P70 hand-off: `job`, which held a concurrency slot, has just ended here (a result, a cancel, a
 * reconciler timeout or deadline: its terminal write gave the slot back), so the longest waiter
 * of its group is driven at once instead of at the leader's next turn (up to
 * SCHEDULER_REPLAY_INTERVAL later, which capped a one-at-a-time group of short jobs near one job
 * per interval). A job that never went out (`dispatch` unset: a waiter, or a job held for
 * approval) held no slot, so its end hands nothing off, and nor does one whose freed slot was
 * taken meanwhile (a second hand-off for the same end: a cancel's own JobCancel coming back, a
 * redelivery), which would only spend a `Check`. The waiter is driven under its own lock,
 * through the normal path (Check, the acquire script's order); a failure is logged and left to
 * the leader's turn, and the caller's write stands.
 */
export async function handOffFreedSlot(ctx: SchedulerContext, job: JobRecord): Promise<void> {
  const c = job.concurrency;
  if (c === undefined || job.dispatch === undefined || !TERMINAL_STATES.has(job.state)) return;
  try {
    const next = await ctx.store.nextSlotWaiter(c.group, c.limit);
    if (next !== undefined && (await drive(ctx, next, null))) ctx.metrics.slotHandOffs.inc();
  } catch (err) {
    ctx.logger.warn('slot hand-off failed; the replayer leader wakes the waiter', { group: c.group, err });
  }
}

/**
 * P225: a result from `workerId` freed one of its slots; if the worker has room now, the longest
 * waiting PENDING job (CapacityWaiters) it can run (topic, placement, requires) is driven at once,
 * under its own lock and through the normal path (Check, routing). A hint whose job is no longer
 * PENDING (it went by its redelivery, or ended) is dropped and the next one tried, a few at most;
 * a drive that finds no room after all (another replica filled the slot) ends the look, and the
 * job waits again (its redelivery, or `job:retry`).
 */
export async function handOffCapacity(ctx: SchedulerContext, workerId: string | undefined): Promise<void> {
  const w = workerId ? ctx.workers.get(workerId) : undefined;
  if (!w || w.draining || isOverloaded(w)) return;
  const pools = ctx.pools();
  const runs = (topic: string, job: WaitingJob): boolean => candidates({ topic, labels: job.labels, requires: job.requires, workers: [w], pools, dispatchUntracked: false }).length > 0;
  for (let i = 0; i < CAPACITY_HINTS_TRIED; i++) {
    const next = ctx.capacityWaiters.take(runs);
    if (next === undefined) return;
    const out = await drivePending(ctx, next);
    if (out === 'stale') continue;
    if (out === 'dispatched') ctx.metrics.capacityHandOffs.inc();
    return;
  }
}

/**
 * A hinted job driven under its lock only while it is still PENDING (a RETRYING one waits for its
 * backoff, D13). `dispatched`: it went or was otherwise moved on (ACK); `waits`: it waits again,
 * filed in `job:retry` as a replayer drive's NAK is; `stale`: not PENDING, or its lock busy.
 */
async function drivePending(ctx: SchedulerContext, id: string): Promise<'dispatched' | 'waits' | 'stale'> {
  let result: 'dispatched' | 'waits' | 'stale' = 'stale';
  await underJobLock(ctx, id, 'capacity hand-off failed', async (lease) => {
    const job = await readLocked(ctx, id);
    if (!job || job.state !== 'PENDING') return false;
    const out = await driveJob(ctx, lease, job);
    if (out.kind === 'nak') {
      await ctx.store.scheduleRetry(id, clusterNow() + (out.delayMs ?? 1000));
      result = 'waits';
    } else {
      result = 'dispatched';
    }
    return true;
  });
  return result;
}

/** true when the job was found in a drivable state and driven. */
function drive(ctx: SchedulerContext, id: string, seenIn: JobState | null): Promise<boolean> {
  return underJobLock(ctx, id, 'replay failed', async (lease) => {
    const job = await readLocked(ctx, id);
    if (seenIn && (!job || job.state !== seenIn)) {
      await ctx.store.repairIndex(id, seenIn, job);
      return false;
    }
    // P83: an attempt whose publish failed (its retry entry filed by publishAttempt) goes out
    // again now, not at the reconciler's dispatch timeout.
    if (job && !seenIn && job.state === 'DISPATCHED' && job.dispatch && !job.dispatch.published) return republishAttempt(ctx, lease, job, job.dispatch);
    if (!job || !ORPHAN_STATES.includes(job.state)) return false;
    if (seenIn && (await settleParked(ctx, lease, job))) return false;
    if (seenIn && (await settleSlotWait(ctx, job))) return false;
    const out: HandlerOutcome = await driveJob(ctx, lease, job);
    if (out.kind === 'nak') await ctx.store.scheduleRetry(id, clusterNow() + (out.delayMs ?? 1000));
    // The job was touched: refresh its orphan clock so it is not re-driven every turn.
    // (never backwards: a job parked meanwhile keeps its clock at its expiry, P15)
    const after = await ctx.store.getJob(id);
    if (after && after.state === job.state) await ctx.store.touchOrphanClock(id, job.state, clusterNow());
    return true;
  });
}

/**
 * Runs `fn` under the job lock. A busy lock means another handler is driving the job (if it still
 * waits afterwards it is filed again), so the job is only looked at again in 1 s; an error files
 * it for 5 s. Both answer false.
 */
async function underJobLock(ctx: SchedulerContext, id: string, failure: string, fn: (lease: Lease) => Promise<boolean>): Promise<boolean> {
  try {
    const r = await withJobLock(ctx, id, fn);
    if (r.busy) {
      await ctx.store.scheduleRetry(id, clusterNow() + 1000);
      return false;
    }
    return r.value;
  } catch (err) {
    ctx.logger.warn(failure, { job_id: id, err });
    await ctx.store.scheduleRetry(id, clusterNow() + 5000).catch(() => undefined);
    return false;
  }
}
