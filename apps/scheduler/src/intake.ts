// sys.job.submit handler (BEHAVIOURS §1.2): lock → dedupe → Check → route → dispatch.
import { boundedError, readyAt, TERMINAL_STATES, type JobRecord, type SafetyRecord } from '@cordum/job-store';
import { MAX_DELIVER, type HandlerContext, type HandlerOutcome } from '@cordum/bus';
import type { BusPacket, JobRequest } from '@cordum/protocol';
import { errorText } from '@cordum/service-kit';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { SchedulerContext } from './context';
import { dispatch, pastDeadline, publishAttempt } from './dispatch';
import { BUSY_NAK_MS, lockedOutcome, releasedBy, THROTTLE_MIN_WAIT_MS, withLockedJob } from './job-lock';
import { noWorkerWait } from './no-worker';
import { handOffFreedSlot } from './replayer';
import { routeFor, withReservedRoute } from './route-job';
import type { Reservation } from './registry';
import type { RouteDecision } from './routing';
import { resolveSafety, type SafetyVerdict } from './safety';
import { concurrencyOf, slotWait, takeSlot } from './slots';

const ACK: HandlerOutcome = { kind: 'ack' };
const nak = (delayMs: number): HandlerOutcome => ({ kind: 'nak', delayMs });

/** D21 fail-closed hold while the kernel cannot answer. */
export const KERNEL_DOWN_NAK_MS = 5_000;
/** D48 backpressure: every candidate ≥ 90 % busy. */
export const OVERLOAD_NAK_MS = 250;

export function submitHandler(ctx: SchedulerContext) {
  return async (packet: BusPacket, h: HandlerContext): Promise<HandlerOutcome> => {
    if (packet.payload.case !== 'jobRequest' || !packet.payload.value.jobId) {
      ctx.metrics.ignored.inc({ kind: 'submit', reason: 'not_a_job_request' });
      return { kind: 'term', reason: 'submit packet without a JobRequest' };
    }
    const req = packet.payload.value;
    const startedAt = clusterNow();
    const r = await withLockedJob(ctx, req.jobId, (lease, job) => {
      // ready → picked up, before the lock wait: dispatch latency split into where it goes.
      if (job?.state === 'PENDING' && h.deliveryCount === 1) ctx.metrics.intakeWait.observe(Math.max(0, startedAt - readyAt(job)) / 1000);
      return intake(ctx, lease, req, job);
    });
    const outcome = lockedOutcome(r, h.deliveryCount);
    // The last delivery (D8): JetStream drops the message after this NAK, and the job would wait
    // for the replayer to find it as an orphan (SCHEDULER_PENDING_REPLAY_AGE, 30 s). A topic whose
    // every worker stayed at capacity for the 20 backpressure NAKs (D48, ≈ 5 s) then started 30 s
    // late. File it in `job:retry` instead, due when the NAK would have been: the replayer leader
    // drives it from there (P130). Outside the lock: the entry only asks for a look under it.
    if (outcome.kind === 'nak' && h.deliveryCount >= MAX_DELIVER) {
      try {
        await ctx.store.scheduleRetry(req.jobId, clusterNow() + (outcome.delayMs ?? 0));
        ctx.metrics.lastDeliveryHandOffs.inc();
        return ACK;
      } catch (err) {
        ctx.logger.warn('submit on its last delivery not handed to the replayer; it finds the job as an orphan', { job_id: req.jobId, err: errorText(err) });
      }
    }
    return outcome;
  };
}

async function intake(ctx: SchedulerContext, lease: Lease, req: JobRequest, job: JobRecord | null): Promise<HandlerOutcome> {
  if (!job) {
    // The gateway writes the record before publishing, so an unknown id is a
    // foreign or expired submit: nothing to schedule.
    ctx.metrics.ignored.inc({ kind: 'submit', reason: 'unknown_job' });
    ctx.logger.warn('submit for unknown job', { job_id: req.jobId });
    return ACK;
  }
  return driveJob(ctx, lease, job);
}

/**
 * Moves a job forward from wherever it stands, under its lock. Shared by the
 * submit handler and the pending replayer (which re-drives lost submits and
 * due `job:retry` entries without any bus message, D8/D13). A NAK outcome
 * means "try again after delayMs": the bus redelivers, the replayer re-files
 * the job in `job:retry`. `job` is the record as read under `lease`; the last
 * write of a path releases the lock in its own script (issue 7).
 */
export async function driveJob(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<HandlerOutcome> {
  if (job.state === 'APPROVAL_REQUIRED') {
    // Waits for a human; approving moves it to PENDING and republishes the submit.
    ctx.metrics.ignored.inc({ kind: 'submit', reason: 'awaiting_approval' });
    return ACK;
  }
  if (job.state !== 'PENDING') return duplicate(ctx, lease, job);
  // D46: past its deadline before it ever ran.
  if (pastDeadline(job)) return failPastDeadline(ctx, lease, job, 'deadline_ms passed before dispatch');

  // A job that already waited for a worker passed Check on its first look. While there is still
  // no worker nothing can be dispatched, so the wait is counted without asking the kernel again
  // (issue 7: a backlog on an unserved topic must not cost a Check per retry); Check still runs
  // right before any dispatch, so a policy change is applied when the job can actually go.
  if ((job.scheduleTries ?? 0) > 0 && routeFor(ctx, job).kind === 'no_worker') return noWorkerWait(ctx, lease, job);
  // P257: likewise a job this replica allowed and found waiting for capacity at its last look
  // (its P225 hint) waits again without a Check while every worker able to run it is still at
  // capacity. Before, each 250 ms redelivery of a saturated topic's backlog asked the kernel: 80
  // jobs queued behind 2 slots made ~1,000 Checks. Check runs again once a worker has room.
  if (ctx.capacityWaiters.has(job.topic, job.id) && routeFor(ctx, job).kind === 'overloaded') return waitForCapacity(ctx, job);

  const verdict = await resolveSafety(ctx, job);
  switch (verdict.kind) {
    case 'unavailable':
      ctx.logger.warn('safety kernel unavailable, holding job', { job_id: job.id, err: verdict.error });
      return nak(KERNEL_DOWN_NAK_MS);
    case 'throttle': {
      const delayMs = Math.max(THROTTLE_MIN_WAIT_MS, verdict.retryAfterMs);
      // P333: the job waits out the throttle as its NAKed message. Its orphan clock moves to the
      // end of the wait, or past SCHEDULER_PENDING_REPLAY_AGE the orphan sweep took it for a lost
      // submit: an early Check, `orphan_replayed{reason=lost}`, and a second loop of re-checks.
      await ctx.store.touchOrphanClock(job.id, job.state, clusterNow() + delayMs);
      return nak(delayMs);
    }
    case 'deny': {
      const w = releasedBy(lease, await ctx.store.transition(job.id, 'DENIED', {
        token: lease.token,
        from: ['PENDING'],
        patch: { safety: verdict.record, error: { code: 'policy_denied', message: verdict.record.reason || 'denied by policy' } },
        current: job,
        release: true,
      }));
      return w.ok || w.reason !== 'fenced' ? ACK : nak(BUSY_NAK_MS);
    }
    case 'require_human': {
      // Not released in the write (P47): a job that enters APPROVAL_REQUIRED leaves
      // job:active:PENDING without entering another in-flight index, so if an approval (which
      // takes this lock, D5) ran between the write and our index move, its ZADD to
      // job:active:PENDING could land before our ZREM, leaving a PENDING job in no index for the
      // replayer to find. The lock is released once the index move is done (withLockedJob).
      // P258: an approval the job had covers an earlier hold, not this one: marked so, so that an
      // approve of this hold after the job ended is not answered `already_approved`.
      const superseded = job.approval?.status === 'approved' ? { approval: { ...job.approval, superseded: true } } : {};
      // P99: a new hold gets the whole job TTL again (as an approval does), so the hold times out
      // (SCHEDULER_APPROVAL_TIMEOUT, counted from this write) before the record can expire. Before
      // the write (P275): renewing a PENDING job's keys is harmless if the write is then refused, and
      // a scheduler killed right after the write no longer leaves a hold on the old TTL (its
      // redelivered submit finds the job held and only acknowledges it).
      await ctx.store.refreshLifetime(job).catch((err: unknown) => ctx.logger.warn('held job lifetime not renewed', { job_id: job.id, err: errorText(err) }));
      const w = await ctx.store.transition(job.id, 'APPROVAL_REQUIRED', { token: lease.token, from: ['PENDING'], patch: { safety: verdict.record, holdHash: verdict.holdHash, ...superseded }, current: job });
      return w.ok || w.reason !== 'fenced' ? ACK : nak(BUSY_NAK_MS);
    }
    case 'allow':
      break;
  }

  return withReservedRoute(ctx, job, undefined, (route, reserved) => dispatchAllowed(ctx, lease, job, verdict, route, reserved));
}

/**
 * D48: every worker that could run the job is at capacity. Not a try: the job waits (NAK, or its
 * `job:retry` entry from the replayer), and a result that frees a slot drives it sooner (P225).
 */
function waitForCapacity(ctx: SchedulerContext, job: JobRecord): HandlerOutcome {
  ctx.metrics.backpressure.inc();
  // Hints are for PENDING jobs only: a RETRYING one keeps its backoff's due time (D13), which
  // only its `job:retry` entry knows; the replayer drives it from there.
  if (job.state === 'PENDING') ctx.capacityWaiters.add(job.topic, job.id, job);
  return nak(OVERLOAD_NAK_MS);
}

/** An allowed PENDING job on its route: backpressure, a wait for a worker or a slot, or its first attempt. */
async function dispatchAllowed(ctx: SchedulerContext, lease: Lease, job: JobRecord, verdict: Extract<SafetyVerdict, { kind: 'allow' }>, route: RouteDecision, reserved: Reservation | undefined): Promise<HandlerOutcome> {
  switch (route.kind) {
    case 'overloaded':
      return waitForCapacity(ctx, job);
    case 'no_worker':
      // Stays PENDING; the wait is bounded and timed by the replayer (job:retry, D13).
      return noWorkerWait(ctx, lease, job);
    case 'worker':
    case 'untracked':
      break;
  }

  // P70: a job allowed with max_concurrent_jobs goes only with a slot of its group.
  const concurrency = concurrencyOf(job, verdict.record.ruleId, verdict.maxConcurrentJobs);
  if (!(await takeSlot(ctx, lease, job, concurrency)) && concurrency) return slotWait(ctx, lease, job, concurrency);

  const maxAttempts = verdict.maxRetries ?? ctx.config.maxAttempts;
  // PENDING → SCHEDULED → DISPATCHED in one fenced write: the route is already known.
  const schedule = {
    safety: verdict.record,
    maxAttempts,
    ...(verdict.maxRuntimeMs !== undefined ? { maxRuntimeMs: verdict.maxRuntimeMs } : {}),
    ...(concurrency ? { concurrency } : {}),
    ...(verdict.maxArtifactBytes !== undefined ? { maxArtifactBytes: verdict.maxArtifactBytes } : {}),
  };
  const out = await dispatch(ctx, lease, job, route, { release: true, schedule, reserved });
  // The deadline passed during the Check or the route (P326): nothing was sent.
  if (out.kind === 'past_deadline') return failPastDeadline(ctx, lease, job, 'deadline_ms passed before dispatch');
  // `lost`: our lease became unsafe or was taken over; the job is PENDING or
  // DISPATCHED(published=false) and a redelivery or the replayer re-drives it under a fresh lock.
  return out.kind === 'lost' ? nak(BUSY_NAK_MS) : ACK;
}

/**
 * D46 (P64, P139): a job with no attempt out, past its deadline, ends FAILED `deadline_exceeded`
 * (the state table has no TIMEOUT from PENDING, SCHEDULED or RETRYING). A RETRYING job held its
 * group's concurrency slot between attempts: the slot goes to the next waiter at once.
 */
async function failPastDeadline(ctx: SchedulerContext, lease: Lease, job: JobRecord, message: string): Promise<HandlerOutcome> {
  const w = releasedBy(lease, await ctx.store.transition(job.id, 'FAILED', { token: lease.token, from: [job.state], patch: { error: { code: 'deadline_exceeded', message } }, current: job, release: true }));
  if (w.ok) await handOffFreedSlot(ctx, w.job);
  return w.ok || w.reason !== 'fenced' ? ACK : nak(BUSY_NAK_MS);
}

/** A redelivered or duplicate submit (or a replayed job) already past PENDING. */
async function duplicate(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<HandlerOutcome> {
  if (TERMINAL_STATES.has(job.state)) {
    // D14: re-run idempotent side effects, then ack; all of them, broadcast included, when the
    // terminal write's reply was lost (P330).
    if (!(await ctx.store.settleEnded(job))) await ctx.store.writeDlq(job);
    ctx.metrics.ignored.inc({ kind: 'submit', reason: 'terminal' });
    return ACK;
  }
  if (job.state === 'SCHEDULED' || job.state === 'RETRYING') {
    // SCHEDULED: a previous owner died before DISPATCHED, nothing was published. RETRYING: a due retry.
    // D46, P139: no attempt past the job's deadline_ms (as for PENDING above, P64).
    if (pastDeadline(job)) return failPastDeadline(ctx, lease, job, 'deadline_ms passed before the next attempt');
    // P334: a RETRYING job's `job:retry` entry owns its next attempt's time (D13's backoff, D48's
    // busy wait). A submit that reaches it early (a redelivery, a message still waiting out a
    // capacity NAK when a hand-off sent the job) sent the next attempt at once. The replayer
    // removes the entry before it drives the job, and the orphan sweep drives only jobs without one.
    if (job.state === 'RETRYING') {
      const dueAt = await ctx.store.retryDueAt(job.id);
      if (dueAt !== null && dueAt > clusterNow()) {
        ctx.metrics.ignored.inc({ kind: 'submit', reason: 'retry_not_due' });
        return ACK;
      }
    }
    // Routed first without a reservation: a retry waiting for a worker costs no kernel call, and
    // the slot is not held across the Check (up to its 2 s deadline) that the gate makes.
    const first = routeFor(ctx, job);
    if (first.kind === 'no_worker') return noWorkerWait(ctx, lease, job);
    if (first.kind === 'overloaded') return waitForCapacity(ctx, job);
    let safety: SafetyRecord | undefined;
    if (job.state === 'RETRYING') {
      const gate = await gateRetry(ctx, lease, job);
      if (gate.kind === 'stopped') {
        // A FAILED write gave a slot back: its group's next waiter goes now, as on the results
        // path, not at the replayer leader's next turn.
        if (gate.job) await handOffFreedSlot(ctx, gate.job);
        return ACK;
      }
      if (gate.kind === 'later') return nak(gate.delayMs);
      safety = gate.record;
    }
    return withReservedRoute(ctx, job, undefined, async (route, reserved) => {
      if (route.kind === 'no_worker') return noWorkerWait(ctx, lease, job);
      if (route.kind === 'overloaded') return waitForCapacity(ctx, job);
      const out = await dispatch(ctx, lease, job, route, { release: true, safety, reserved });
      if (out.kind === 'past_deadline') return failPastDeadline(ctx, lease, job, 'deadline_ms passed before the next attempt');
      return out.kind === 'lost' ? nak(BUSY_NAK_MS) : ACK;
    });
  }
  const d = job.dispatch;
  if (job.state === 'DISPATCHED' && d && !d.published) {
    // D2: we hold the lock, so the attempt's owner no longer does; republish the SAME attempt.
    ctx.logger.info('republishing unpublished attempt', { job_id: job.id, dispatch_id: d.dispatchId });
    const out = await publishAttempt(ctx, lease, job, d, true);
    // past_deadline: not sent; the reconciler's deadline pass ends it TIMEOUT (D46).
    return out.kind === 'lost' ? nak(BUSY_NAK_MS) : ACK;
  }
  ctx.metrics.ignored.inc({ kind: 'submit', reason: 'duplicate' });
  return ACK;
}

/** What the policy says of a retry (gateRetry). */
export type RetryGate =
  /** `record`: the decision, for the attempt's DISPATCHED write (DispatchOptions.safety). */
  | { kind: 'go'; record: SafetyRecord }
  /** Ask again after `delayMs` (THROTTLE, kernel unavailable, our FAILED write fenced): the job stays RETRYING. */
  | { kind: 'later'; delayMs: number }
  /** The policy stopped the retry: the job is FAILED (`job`, the lock released by the write) or had left RETRYING. */
  | { kind: 'stopped'; job?: JobRecord };

/**
 * P131: `Check` again before a RETRYING job's next attempt. A retry is another execution of the
 * job, so a rule added since its admission (a deny on the topic, a hold) applies to it as to a new
 * job; without this, a deny added to stop a job that kept failing stopped only new jobs, and the
 * remaining attempts of one admitted before it ran. Called under the job lock, once a worker is
 * there to take the attempt (a retry waiting for a worker costs no kernel call, as a PENDING job's
 * wait does not).
 * - ALLOW (an approval that covers a REQUIRE_HUMAN included, D18; `input_fail_mode: open` with
 *   the kernel down): the attempt goes, with the constraints the job was admitted with.
 * - DENY: FAILED `policy_denied` + DLQ.
 * - REQUIRE_HUMAN not covered by the job's approval: FAILED `approval_required` + DLQ (the state
 *   table, DECISIONS D12, has no RETRYING → APPROVAL_REQUIRED; a DLQ retry is a new job, which is
 *   held for its approval like any other).
 * - THROTTLE: again after `retry_after_ms`; kernel unavailable (closed) or a kernel error: again
 *   after 5 s. The job stays RETRYING and keeps its slot meanwhile.
 */
async function gateRetry(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<RetryGate> {
  const v = await resolveSafety(ctx, job);
  switch (v.kind) {
    case 'allow':
      return { kind: 'go', record: v.record };
    case 'throttle':
      return { kind: 'later', delayMs: Math.max(THROTTLE_MIN_WAIT_MS, v.retryAfterMs) };
    case 'unavailable':
      ctx.logger.warn('safety kernel unavailable, holding a retry', { job_id: job.id, err: v.error });
      return { kind: 'later', delayMs: KERNEL_DOWN_NAK_MS };
    case 'deny':
    case 'require_human': {
      const rule = v.record.ruleId ? ` (policy rule ${v.record.ruleId})` : '';
      const error = v.kind === 'deny'
        ? boundedError('policy_denied', `retry of attempt ${job.attempts} denied${rule}: ${v.record.reason || 'denied by policy'}`)
        : boundedError('approval_required', `retry of attempt ${job.attempts} needs a human approval${rule}, which a retry cannot wait for: retry the job from the DLQ to hold it for one`);
      const w = releasedBy(lease, await ctx.store.transition(job.id, 'FAILED', { token: lease.token, from: ['RETRYING'], patch: { safety: v.record, error }, current: job, release: true }));
      if (!w.ok) return w.reason === 'fenced' ? { kind: 'later', delayMs: BUSY_NAK_MS } : { kind: 'stopped' };
      ctx.metrics.retriesStopped.inc({ decision: v.kind });
      ctx.logger.info('retry stopped by policy, job FAILED', { job_id: job.id, decision: v.kind, rule_id: v.record.ruleId, attempts: job.attempts });
      return { kind: 'stopped', job: w.job };
    }
  }
}
