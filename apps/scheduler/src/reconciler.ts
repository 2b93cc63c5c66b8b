// Reconciler (BEHAVIOURS §1.7, D1, D2, D46), one leader `cordum:reconciler:default`.
// Every scan_interval it reads only what is due from ZSETs (job:active:<state>
// scored by state entry, job:deadline), so a scan costs O(due jobs), never
// O(history):
//   DISPATCHED past dispatch_timeout: unpublished (owner gone: we hold its lock)
//     → republish the same attempt (D2); claimed by a worker (start ack lost)
//     → RUNNING (P12); start-ack worker and unclaimed → new attempt (D1 b);
//     otherwise → TIMEOUT (+DLQ).
//   RUNNING past running_timeout → TIMEOUT (+DLQ): it started, so never redispatched (D1).
//   deadline_ms passed (D46) → TIMEOUT (DISPATCHED/RUNNING) or FAILED
//     `deadline_exceeded` (PENDING/SCHEDULED/RETRYING: the table has no TIMEOUT there).
//   held for approval longer than SCHEDULER_APPROVAL_TIMEOUT → DENIED `approval_expired` (+DLQ,
//     P99), found through the tenants' APPROVAL_REQUIRED listings (scored by creation, so only
//     jobs created before the bound are read).

import { ATTEMPT_OUT_STATES, TERMINAL_STATES, type JobRecord, type JobState, type ScoredId } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import { subjects } from '@cordum/bus';
import { clusterNow } from '@cordum/redis';
import { errorText } from '@cordum/service-kit';
import { QUEUE, type SchedulerContext } from './context';
import { forEachLimit } from './for-each';
import { pastDeadline, republishAttempt, safeMarginMs } from './dispatch';
import { recordAudit } from './audit';
import { readLocked, withJobLock } from './job-lock';
import { reattemptLocked } from './redispatch';
import { oweCancel, tellWorkerToStop } from './cancels';
import { handOffFreedSlot } from './replayer';

export const SCAN_LIMIT = 500;
/**
 * P227: AckWait (30 s, D8) and a pull's lifetime (5 s): by then a result a stopped or frozen
 * replica had fetched is redelivered to another one. Bounds the wait below.
 */
export const LATE_RESULT_MS = 35_000;
/** The bound and the stream's times come from two clocks (ours, the NATS server's). */
const CLOCK_MARGIN_MS = 5_000;
const SCAN_CONCURRENCY = 8;
const APPROVAL_DEADLINE_RECHECK_MS = 60_000;

export async function reconcileOnce(ctx: SchedulerContext): Promise<{ stale: number }> {
  const now = clusterNow();
  const t = ctx.timeouts().reconciler;
  ctx.metrics.reconcileScans.inc();
  const dispatchMs = t.dispatch_timeout_seconds * 1000;
  const runningMs = t.running_timeout_seconds * 1000;
  const dispatched = await ctx.store.listActive('DISPATCHED', now - dispatchMs, SCAN_LIMIT);
  const running = await ctx.store.listActive('RUNNING', now - runningMs, SCAN_LIMIT);
  ctx.metrics.staleJobs.set(dispatched.length + running.length);
  const deadlines = await ctx.store.listDeadlineDue(now, SCAN_LIMIT);
  // One look at the results consumer per scan, and none when nothing can time out.
  const scan: Scan = { resultsHeldSince: dispatched.length + running.length + deadlines.length > 0 ? await resultsHeldSince(ctx) : null };
  await forEachLimit(dispatched, SCAN_CONCURRENCY, (e) => locked(ctx, e, 'DISPATCHED', (lease, job) => onDispatched(ctx, scan, lease, job), dispatchMs));
  await forEachLimit(running, SCAN_CONCURRENCY, (e) =>
    locked(ctx, e, 'RUNNING', (lease, job) => timeout(ctx, scan, lease, job, job.updatedAt + runningMs, 'running_timeout', `no result within ${t.running_timeout_seconds}s of start`), runningMs),
  );
  await forEachLimit(deadlines, SCAN_CONCURRENCY, (e) => onDeadline(ctx, scan, e.id));
  await expireApprovals(ctx, now);
  return { stale: dispatched.length + running.length };
}

/** What one scan knows of the results consumer. */
interface Scan {
  /** Bus.unackedSince for sys.job.result: null when every result delivered is acknowledged. */
  resultsHeldSince: number | null;
}

/**
 * P227: whether results may be held unacknowledged (a replica that froze or died with results it
 * had fetched: JetStream gives them to another only after AckWait). A bus that does not answer
 * counts as holding everything (0): results cannot be flowing either.
 */
async function resultsHeldSince(ctx: SchedulerContext): Promise<number | null> {
  try {
    return await ctx.bus.unackedSince(QUEUE, subjects.result);
  } catch (err) {
    ctx.logger.debug('results consumer state unknown; timeouts that came due in the last 35 s wait for a late result', { err: errorText(err) });
    return 0;
  }
}

/** When each scheduler's leader last looked for expired holds. */
const lastApprovalPass = new WeakMap<SchedulerContext, number>();
/** Where each scheduler's next pass reads each held listing (P247). */
const heldCursors = new WeakMap<SchedulerContext, Map<string, number>>();

/**
 * P99: a hold nobody answered within the timeout ends DENIED, with its DLQ entry and state event.
 * Not every scan: at most once a minute (a quarter of the timeout when that is shorter), since it
 * reads the index registry as well as the holds that are due. The listings are scored by
 * creation and a re-held job's hold counts from its last hold, so SCAN_LIMIT re-held jobs not
 * yet due could hide every due hold of their tenant created after them (until their own holds
 * expired, maybe after the records of those behind them): each pass reads on from where the
 * last one stopped (P247).
 */
async function expireApprovals(ctx: SchedulerContext, now: number): Promise<void> {
  const timeoutMs = ctx.config.approvalTimeoutMs;
  if (now - (lastApprovalPass.get(ctx) ?? 0) < Math.min(60_000, timeoutMs / 4)) return;
  lastApprovalPass.set(ctx, now);
  let cursor = heldCursors.get(ctx);
  if (!cursor) heldCursors.set(ctx, (cursor = new Map()));
  const held = await ctx.store.listHeld(now - timeoutMs, SCAN_LIMIT, cursor);
  await forEachLimit(held, SCAN_CONCURRENCY, (e) =>
    locked(ctx, e, 'APPROVAL_REQUIRED', async (lease, job) => {
      // Held since its last write (a re-hold after an approval starts the clock again).
      if (job.updatedAt + timeoutMs > now) return;
      const message = `no approval or rejection within ${Math.round(timeoutMs / 1000)}s of the hold`;
      const w = await ctx.store.transition(job.id, 'DENIED', { token: lease.token, from: ['APPROVAL_REQUIRED'], patch: { error: { code: 'approval_expired', message } }, dlqReason: message, current: job });
      if (w.ok) {
        ctx.metrics.reconciled.inc({ action: 'approval_expired' });
        ctx.logger.info('held job expired without approval', { job_id: job.id, tenant: job.tenant, held_ms: now - job.updatedAt, rule_id: job.safety?.ruleId ?? '' });
        // P336: what an approve or reject would have recorded (P311), for the hold nobody answered.
        recordAudit(ctx, {
          action: 'approval.expire',
          tenant: job.tenant,
          target: job.id,
          details: { rule_id: job.safety?.ruleId ?? '', job_hash: job.holdHash ?? '', policy_snapshot: job.safety?.policySnapshot ?? '', reason: message, held_ms: String(now - job.updatedAt) },
        });
      }
    }),
  );
}


/**
 * Under the job lock, with index repair when the job is no longer in the state its index says.
 * `fn` answers the job it ended, if any: its concurrency slot is handed on once the lock is
 * released (P70), so the next waiter's drive (its lock, `Check`, publish) is not done under it.
 *
 * `overdueAfterMs` (the DISPATCHED and RUNNING passes): the list was read before this lock, and
 * in between (a GC pause, a leader frozen and resumed, a long scan) the job may have moved on to
 * a newer attempt in the same state (a retryable result, then attempt 2 DISPATCHED or RUNNING).
 * So `fn` runs only when the record read under the lock has itself been in the state for that
 * long, counted from its `updatedAt`: the time its `job:active:<state>` entry is scored by (every
 * write's index move files it at its `updatedAt`; a republish re-files it a moment after its mark;
 * the one write in these states that moves `updatedAt` without a new score is an attempt's mark
 * as published, once per publish, which only postpones the check by that publish's latency).
 * A job skipped here keeps its entry, re-scored by its newer write, so a later scan finds it when
 * that attempt is due.
 *
 * Each pass reads only the SCAN_LIMIT oldest due entries, so a job this visit leaves as it was
 * (no worker free for a new attempt, P31; the lease lost mid-way; its lock busy; an error) would
 * be read first again by every scan, and SCAN_LIMIT such jobs would hide every job due behind
 * them, for up to the no-worker bound (D13). Once looked at, its entry goes behind every entry
 * due at this scan, still due (`now - overdueAfterMs`): the next scan reads the jobs it did not
 * reach first and this one again after them, so each is still retried once a scan while fewer
 * than SCAN_LIMIT are due. Every bound these passes apply counts from the record (`updatedAt`,
 * `dispatchedAt`), never from the entry's score, so this postpones none of them. An entry a
 * write moved meanwhile (a new attempt's, later) or removed (the job left the state) is left as
 * it is (deferActive: XX GT).
 */
async function locked(ctx: SchedulerContext, e: ScoredId, seenIn: JobState, fn: (lease: Lease, job: JobRecord) => Promise<JobRecord | void>, overdueAfterMs?: number): Promise<void> {
  try {
    const r = await withJobLock(ctx, e.id, async (lease) => {
      const job = await readLocked(ctx, e.id);
      if (!job || job.state !== seenIn) {
        await ctx.store.repairIndex(e.id, seenIn, job);
        return;
      }
      if (overdueAfterMs !== undefined && job.updatedAt + overdueAfterMs > clusterNow()) {
        ctx.logger.debug('reconcile skipped: the job moved on to a newer write since the scan', { job_id: job.id, state: job.state, attempt: job.attempts, listed_at: e.score, updated_at: job.updatedAt });
        return;
      }
      return fn(lease, job);
    });
    if (!r.busy && r.value) await handOffFreedSlot(ctx, r.value);
  } catch (err) {
    ctx.logger.warn('reconcile job failed', { job_id: e.id, err });
  }
  if (overdueAfterMs !== undefined) {
    await ctx.store.deferActive(e.id, seenIn, clusterNow() - overdueAfterMs).catch((err: unknown) => ctx.logger.warn('reconcile: scan entry not moved back', { job_id: e.id, err }));
  }
}

async function onDispatched(ctx: SchedulerContext, scan: Scan, lease: Lease, job: JobRecord): Promise<JobRecord | void> {
  const d = job.dispatch;
  const t = ctx.timeouts().reconciler;
  if (d && !d.published) {
    // D2: we hold the lock, so the owner's lease expired; the attempt may never have left it.
    if (await republishAttempt(ctx, lease, job, d)) ctx.metrics.reconciled.inc({ action: 'republish' });
    return;
  }
  if (d && (await ctx.store.claimedDispatch(job.id)) === d.dispatchId) {
    // A worker claimed this very attempt, so it started (D1): its start ack was lost (core NATS,
    // e.g. to a replica that died) and its result may still be on the way (JetStream redelivers a
    // dead replica's fetched messages only after AckWait, 30 s). RUNNING, never a redispatch or a
    // TIMEOUT for "not started"; the running timeout applies from now (P12).
    return claimedToRunning(ctx, lease, job);
  }
  if (d?.startAck) {
    const r = await reattemptLocked(ctx, lease, job, d.dispatchId);
    if (r === 'redispatched' || r === 'started') {
      ctx.metrics.reconciled.inc({ action: r === 'started' ? 'running' : 'redispatch' });
      return;
    }
    // past_deadline: this scan's deadline pass (D46) ends it TIMEOUT, with the deadline's code.
    if (r === 'moved' || r === 'busy' || r === 'error' || r === 'past_deadline') return;
    // Provably unstarted but every other candidate is busy or gone: waiting for capacity is
    // right, a TIMEOUT would fail a job that can still run. Bounded like a no-worker wait (D13).
    if (r === 'no_route' && clusterNow() - (job.dispatchedAt ?? job.updatedAt) < ctx.config.replay.maxScheduleWaitMs) return;
  }
  // P49: the claim read above and the TIMEOUT write are two round trips; a worker that claims
  // in between would run a job recorded "not started". The fence closes the attempt to claims
  // first, or finds the claim (it started: RUNNING, as above).
  if (d && !(await ctx.store.fenceClaim(job.id, d.dispatchId, d.attempt))) return claimedToRunning(ctx, lease, job);
  return timeout(ctx, scan, lease, job, job.updatedAt + t.dispatch_timeout_seconds * 1000, 'dispatch_timeout', `not started within ${t.dispatch_timeout_seconds}s of dispatch`);
}

async function claimedToRunning(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<void> {
  const w = await ctx.store.transition(job.id, 'RUNNING', { token: lease.token, from: ['DISPATCHED'] });
  if (w.ok) ctx.metrics.reconciled.inc({ action: 'running' });
}

/**
 * Ends the attempt TIMEOUT; answers the ended job (for its slot's hand-off after the lock), if
 * written. `boundAt`: when the bound it applies passed.
 *
 * P227: a result the worker sent before the bound can sit unacknowledged in a replica that froze
 * (a GC pause, a stalled VM) or died after fetching it, until JetStream gives it to another after
 * AckWait: the job then ended TIMEOUT although it had succeeded, its late result was ignored, and
 * a retry from the DLQ ran it again. So while results are held since before the bound passed, the
 * TIMEOUT waits until LATE_RESULT_MS after the bound (a later scan: the entry stays due), and a
 * result that arrives meanwhile ends the job. Results held only since after the bound cannot be
 * this attempt's on-time answer, and past LATE_RESULT_MS any such result has been redelivered.
 */
async function timeout(ctx: SchedulerContext, scan: Scan, lease: Lease, job: JobRecord, boundAt: number, code: string, message: string): Promise<JobRecord | undefined> {
  const held = scan.resultsHeldSince;
  if (held !== null && held - CLOCK_MARGIN_MS < boundAt && clusterNow() < boundAt + LATE_RESULT_MS) {
    ctx.metrics.reconciled.inc({ action: 'timeout_deferred' });
    // debug: under steady load some result is nearly always in a handler, so a TIMEOUT found
    // within seconds of its bound waits a scan or two without any replica having stalled.
    ctx.logger.debug('timeout waits for a result a replica may hold', { job_id: job.id, code, attempt: job.attempts, until: new Date(boundAt + LATE_RESULT_MS).toISOString() });
    return undefined;
  }
  await ctx.store.expireResult(job);
  await oweCancel(ctx, job);
  const w = await ctx.store.transition(job.id, 'TIMEOUT', { token: lease.token, from: [job.state], patch: { error: { code, message } } });
  if (w.ok) {
    ctx.metrics.reconciled.inc({ action: code });
    ctx.logger.info('job timed out', { job_id: job.id, code, attempt: job.attempts });
    // A worker still on the attempt stops and frees its slot; its result would be ignored anyway.
    await tellWorkerToStop(ctx, w.job, message);
    return w.job;
  }
  return undefined;
}

async function onDeadline(ctx: SchedulerContext, scan: Scan, id: string): Promise<void> {
  try {
    const r = await withJobLock(ctx, id, async (lease): Promise<JobRecord | void> => {
      const job = await readLocked(ctx, id);
      if (!job || TERMINAL_STATES.has(job.state)) return setDeadlineLocked(ctx, lease, id, null);
      const now = clusterNow();
      const out = ATTEMPT_OUT_STATES.has(job.state);
      if (pastDeadline(job, now)) {
        if (job.state === 'APPROVAL_REQUIRED') return setDeadlineLocked(ctx, lease, id, now + APPROVAL_DEADLINE_RECHECK_MS);
        const message = 'deadline_ms passed';
        if (out) return timeout(ctx, scan, lease, job, job.deadlineAt ?? now, 'deadline_exceeded', message);
        if (job.state === 'PENDING' || job.state === 'SCHEDULED' || job.state === 'RETRYING') {
          const w = await ctx.store.transition(id, 'FAILED', { token: lease.token, from: [job.state], patch: { error: { code: 'deadline_exceeded', message } } });
          if (w.ok) {
            ctx.metrics.reconciled.inc({ action: 'deadline_exceeded' });
            return w.job; // a RETRYING job held a slot between attempts
          }
        }
        return;
      }
      // A RUNNING attempt went out, whatever `published` says: a worker started it. Its publish can
      // have left without being marked (a flush that failed after sending, P83/P158; a crash
      // before the mark), and nothing marks a RUNNING attempt later, so the bound was dropped
      // below and max_runtime_ms went unenforced for it (P175).
      if (out && (job.dispatch?.published || job.state === 'RUNNING') && job.maxRuntimeMs !== undefined) {
        // P65: the entry's score is the bound the current attempt's publish recorded (under this
        // lock): due → TIMEOUT; moved later by a newer publish since the scan → it fires again then.
        const due = await ctx.store.deadlineScore(id);
        // An attempt's bound is never earlier than its own DISPATCHED write + max_runtime_ms (or the
        // job's deadline): one earlier is an older attempt's, left when this attempt's bound write
        // failed (recordRuntimeBound only logs that). Set this attempt's instead of ending it early.
        const own = Math.min(job.deadlineAt ?? Infinity, (job.dispatchedAt ?? job.updatedAt) + job.maxRuntimeMs);
        if (due !== null && due < own) return setDeadlineLocked(ctx, lease, id, own);
        if (due !== null && due <= now) return timeout(ctx, scan, lease, job, due, 'max_runtime_exceeded', `attempt ${job.attempts} ran past max_runtime_ms ${job.maxRuntimeMs} (policy rule ${job.safety?.ruleId ?? ''})`);
        return;
      }
      // Between attempts, or an attempt not published yet (its publish records its own bound):
      // due again only at the job's own deadline.
      return setDeadlineLocked(ctx, lease, id, job.deadlineAt ?? null);
    });
    // The ended job's slot goes on after its lock is released (P70).
    if (!r.busy && r.value) await handOffFreedSlot(ctx, r.value);
  } catch (err) {
    ctx.logger.warn('deadline check failed', { job_id: id, err });
  }
}

/**
 * A `job:deadline` write of the deadline pass, made under the job lock from the record read under
 * it. The entry is not fenced (one global key, in another Cluster slot than the lock), and it is
 * the current attempt's max_runtime_ms bound (P65): a reconciler that resumes after its lock
 * expired (a GC pause, a frozen process), from a record a newer attempt has replaced since, would
 * drop that attempt's bound or move it, and the pass only visits entries that exist. So the write
 * is made only while the lease is safe (D3, as before a publish), checked right before it with
 * nothing awaited in between; the entry is otherwise left to the next scan, or to the lock's new
 * owner.
 */
function setDeadlineLocked(ctx: SchedulerContext, lease: Lease, id: string, atMs: number | null): Promise<void> {
  if (!lease.safeToAct(safeMarginMs(lease.ttlMs))) {
    ctx.logger.warn('deadline entry not written: the job lock is no longer safe to act on', { job_id: id });
    return Promise.resolve();
  }
  return ctx.store.setDeadline(id, atMs);
}
