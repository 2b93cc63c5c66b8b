// D2 dispatch order, under the job lock:
//   SCHEDULED|RETRYING → DISPATCHED {published:false, new DispatchIdentity} (fenced)
//   → lease.safeToAct() (D3) → max_runtime_ms bound (P65) → lease.safeToAct() again, with
//   nothing awaited before the publish → core publish → await flush → markPublished (fenced)
// The caller releases the lock and only then acks the bus message.
// A markPublished that Redis fails is tried again while the lease is safe (P188).
// Residual window: a crash after the flush and before `published=true` leaves
// an attempt that may have reached a worker but looks unpublished; the
// redelivered submit republishes the SAME dispatch id, so worker-sdk (which
// runs only the current dispatch id) still runs it once.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { readyAt, type DispatchRecord, type JobPatch, type JobRecord, type JobState, type MarkPublishedResult, type SafetyRecord } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { SchedulerContext } from './context';
import { dispatchPacket, jobRequestFor } from './packets';
import { directSubject, type Reservation } from './registry';
import type { RouteDecision } from './routing';
import { errorText } from '@cordum/service-kit';

export type DispatchOutcome =
  | { kind: 'dispatched'; job: JobRecord }
  /** The lease is no longer safe (D3) or a fenced write was refused: do nothing more. */
  | { kind: 'lost'; reason: string }
  /** The job moved on under us (state mismatch): the packet is stale. */
  | { kind: 'stale'; state?: JobState }
  /**
   * D46, P326: the job's deadline_ms has passed, so nothing was sent. A new attempt was not
   * written; an attempt already recorded (unpublished) stays as it is, for the reconciler's
   * deadline pass to end TIMEOUT.
   */
  | { kind: 'past_deadline' };

/** D46: past the job's `deadline_ms` no attempt goes out (P139, P326), whichever path would send it. */
export function pastDeadline(job: JobRecord, now = clusterNow()): boolean {
  return job.deadlineAt !== undefined && now >= job.deadlineAt;
}

/** markPublished's retry backoff (P188): 50 ms doubling to 1 s, for as long as the lease is safe. */
const MARK_RETRY_FIRST_MS = 50;
const MARK_RETRY_MAX_MS = 1_000;

type Routed = Extract<RouteDecision, { kind: 'worker' } | { kind: 'untracked' }>;

/**
 * A new attempt. From SCHEDULED / RETRYING it is a plain fenced transition; from
 * DISPATCHED (delivery-verification fallback, reconciler) it replaces the current
 * attempt only if no worker claimed it (D1 b, reattempt-3.lua): `started`.
 */
export interface DispatchOptions {
  /**
   * The caller is done with the job once the attempt is marked published, so that write also
   * deletes the lock (D6) and the lease is marked released (issue 7).
   */
  release?: boolean;
  /**
   * For a PENDING job whose Check and route are done: the SCHEDULED patch (safety, maxAttempts).
   * PENDING → SCHEDULED → DISPATCHED is then one atomic write (issue 7: one script and one
   * index move less per job); SCHEDULED is still broadcast and recorded in the decision history.
   */
  schedule?: JobPatch;
  /**
   * For a RETRYING job: the decision of the `Check` made right before this attempt (P131),
   * written with its DISPATCHED write, so the job shows it and its decision history records it.
   */
  safety?: SafetyRecord;
  /** The routed worker's slot (routeReserving, P224): committed when the attempt is published. */
  reserved?: Reservation;
}

export async function dispatch(ctx: SchedulerContext, lease: Lease, job: JobRecord, route: Routed, o: DispatchOptions = {}): Promise<DispatchOutcome | { kind: 'started' }> {
  const { release = false } = o;
  const now = clusterNow();
  // The Check and the route (up to seconds) came after the caller's own deadline check.
  if (pastDeadline(job, now)) return { kind: 'past_deadline' };
  ctx.capacityWaiters.delete(job.topic, job.id);
  const workerId = route.kind === 'worker' ? route.worker.workerId : undefined;
  const d: DispatchRecord = {
    dispatchId: randomUUID(),
    attempt: job.attempts + 1,
    published: false,
    subject: route.subject,
    ...(workerId ? { workerId } : {}),
    // Only a direct publish reaches exactly the worker whose handshake we know (D1 b).
    startAck: route.kind === 'worker' && route.worker.startAck && workerId !== undefined && route.subject === directSubject(workerId),
  };
  const patch: JobPatch = { dispatch: d, attempts: d.attempt, dispatchedAt: now, ...(workerId ? { workerId } : {}) };
  if (job.state === 'DISPATCHED') {
    const replaces = job.dispatch?.dispatchId ?? '';
    const r = await ctx.store.reattempt(job.id, replaces, { token: lease.token, patch });
    if (!r.ok) {
      if (r.reason === 'claimed') return { kind: 'started' };
      return r.reason === 'fenced' ? { kind: 'lost', reason: 'fenced' } : { kind: 'stale', state: r.current?.state };
    }
    return publishAttempt(ctx, lease, r.job, d, release, o.reserved);
  }
  // The DISPATCHED write's index moves go out with it but are awaited only once the attempt is
  // published and marked (issue 7: the worker gets the job one Redis round trip sooner).
  const sideWrites: Promise<void>[] = [];
  // A PENDING job with its SCHEDULED patch goes through SCHEDULED in the same write.
  const schedule = job.state === 'PENDING' ? o.schedule : undefined;
  const from: JobState = schedule ? 'PENDING' : job.state === 'RETRYING' ? 'RETRYING' : 'SCHEDULED';
  const w = await ctx.store.transition(job.id, 'DISPATCHED', {
    token: lease.token,
    from: [from],
    via: schedule ? 'SCHEDULED' : undefined,
    patch: schedule ? { ...schedule, ...patch } : o.safety ? { ...patch, safety: o.safety } : patch,
    current: job,
    sideWrites,
  });
  if (!w.ok) return w.reason === 'fenced' ? { kind: 'lost', reason: 'fenced' } : { kind: 'stale', state: w.current?.state };
  const out = await publishAttempt(ctx, lease, w.job, d, release, o.reserved);
  await Promise.all(sideWrites);
  return out;
}


/** D3 margin: 5 s before the lease's expiry (less for the short test TTLs, which stay ≥ 3 s). */
export function safeMarginMs(ttlMs: number): number {
  return Math.min(5_000, Math.floor(ttlMs / 3));
}

/**
 * P65: the attempt's max_runtime_ms bound, counted from its publish (a republish of an attempt
 * whose owner died, D2, gets its own), into `job:deadline` at the earlier of it and the job's
 * deadline. Written under the job lock right before the publish, so the entry's score is always
 * the current attempt's. A failed write is logged and the attempt still goes: its running timeout
 * still bounds it.
 */
async function recordRuntimeBound(ctx: SchedulerContext, job: JobRecord, maxRuntimeMs: number): Promise<void> {
  try {
    await ctx.store.setDeadline(job.id, Math.min(job.deadlineAt ?? Infinity, clusterNow() + maxRuntimeMs));
  } catch (err) {
    ctx.logger.warn('max_runtime_ms bound not recorded; the running timeout still bounds the attempt', { job_id: job.id, err: errorText(err) });
  }
}

/**
 * An attempt recorded DISPATCHED but never marked published (its owner died, D2, or its publish
 * failed, P83) goes out again with the same dispatch id, and its dispatch clock restarts. true
 * when it was published and marked.
 */
export async function republishAttempt(ctx: SchedulerContext, lease: Lease, job: JobRecord, d: DispatchRecord): Promise<boolean> {
  const out = await publishAttempt(ctx, lease, job, d);
  if (out.kind !== 'dispatched') return false;
  await ctx.store.reindex(job.id, 'DISPATCHED', 'DISPATCHED', clusterNow());
  return true;
}

/**
 * Publishes the attempt recorded on the job (also used to republish an
 * unpublished attempt whose owner died, D2) and marks it published. `reserved`: the slot routing
 * took for it (P224), which becomes the in-flight dispatch; without one the worker's in-flight
 * count is raised here.
 */
export async function publishAttempt(ctx: SchedulerContext, lease: Lease, job: JobRecord, d: DispatchRecord, release = false, reserved?: Reservation): Promise<DispatchOutcome> {
  const margin = safeMarginMs(lease.ttlMs);
  // D3, checked first so a lease already unsafe costs no write, and again right before the
  // publish: the bound's write is awaited, and a process frozen there (GC, SIGSTOP) may wake
  // after its lock expired and another replica republished the attempt (D2).
  if (!lease.safeToAct(margin)) return { kind: 'lost', reason: 'lease_unsafe' };
  // D46 (P326): a recorded attempt that never left (its owner died before the publish, D2, or the
  // publish failed, P83) is not sent past the job's deadline by the redelivered submit, the
  // replayer or the reconciler's republish; the deadline pass ends it TIMEOUT, nothing ran.
  if (pastDeadline(job)) {
    ctx.logger.info('attempt not sent: the job is past its deadline_ms', { job_id: job.id, dispatch_id: d.dispatchId, attempt: d.attempt });
    return { kind: 'past_deadline' };
  }
  if (job.maxRuntimeMs !== undefined) await recordRuntimeBound(ctx, job, job.maxRuntimeMs);
  const packet = dispatchPacket(ctx.instanceId, job, jobRequestFor(job, d));
  try {
    const data = ctx.encodeForWorkers(packet);
    if (!lease.safeToAct(margin)) return { kind: 'lost', reason: 'lease_unsafe' };
    ctx.bus.publishCore(d.subject, data);
    await ctx.bus.flush();
  } catch (err) {
    // The attempt is recorded DISPATCHED but may not have left (NATS dropped the connection
    // mid-flush). A submit's or a result's message is redelivered and republishes it, but a
    // drive by the replayer or a slot hand-off has no message behind it: without this it waited
    // for the dispatch timeout (120 s). The replayer republishes it, same dispatch id (P83).
    await ctx.store.scheduleRetry(job.id, clusterNow() + 1000).catch(() => undefined);
    throw err;
  }
  if (d.workerId) {
    if (reserved?.workerId === d.workerId) reserved.commit();
    else ctx.workers.noteDispatched(d.workerId);
  }
  // The job's first attempt only (P141): a retry's or a replacement's time since creation
  // includes earlier attempts' run times and backoffs, which are not dispatch latency.
  if (d.attempt === 1) ctx.metrics.dispatchLatency.observe(Math.max(0, clusterNow() - readyAt(job)) / 1000);
  const m = await markPublishedHolding(ctx, lease, job, d, release, margin);
  if (m.ok && release) lease.markReleased();
  if (!m.ok) {
    // Published but not marked: the residual window of D2, logged for the reconciler's audit.
    ctx.logger.warn('dispatch published but not marked', { job_id: job.id, dispatch_id: d.dispatchId, reason: m.reason });
    return m.reason === 'fenced' ? { kind: 'lost', reason: 'fenced_after_publish' } : { kind: 'dispatched', job };
  }
  ctx.verifier.track(job.id, d.dispatchId);
  ctx.logger.debug('job dispatched', { job_id: job.id, dispatch_id: d.dispatchId, attempt: d.attempt, subject: d.subject });
  return { kind: 'dispatched', job: m.job };
}

/**
 * `markPublished`, tried again while the lease is safe when Redis fails it (P188). The attempt has
 * left: a throw here would end the handler, release the lock, and the message's re-run (P101) or
 * redelivery would find the attempt unpublished and send it again, which a CAP worker without
 * start acks runs twice. It gives up when the lease is past its margin (another replica may own
 * the job by then) or after one lease TTL of failures: a Redis that renews the lock but refuses
 * the write (OOM under `noeviction`) would otherwise hold the handler, and a stop, for as long as
 * it lasts. Both leave the D2 residual window: the attempt may go out again. A try that timed
 * out may have been applied and deleted the lock (`release`): a later try then finds the lock
 * gone, and the record showing this dispatch published is the answer.
 */
async function markPublishedHolding(ctx: SchedulerContext, lease: Lease, job: JobRecord, d: DispatchRecord, release: boolean, margin: number): Promise<MarkPublishedResult> {
  let delayMs = MARK_RETRY_FIRST_MS;
  let tried = false;
  const giveUpAt = performance.now() + lease.ttlMs;
  for (;;) {
    try {
      const m = await ctx.store.markPublished(job.id, d.dispatchId, lease.token, { current: job, release });
      const cur = !m.ok ? m.current : undefined;
      if (tried && cur?.dispatch?.dispatchId === d.dispatchId && cur.dispatch.published) return { ok: true, job: cur };
      return m;
    } catch (err) {
      if (!lease.safeToAct(margin) || performance.now() >= giveUpAt) {
        ctx.logger.warn('dispatch published but not marked; giving up, the attempt may be sent again', { job_id: job.id, dispatch_id: d.dispatchId, err: errorText(err) });
        throw err;
      }
      ctx.logger.warn('marking a published dispatch failed; trying again while the job lock is held', { job_id: job.id, dispatch_id: d.dispatchId, err: errorText(err) });
      tried = true;
      await sleep(delayMs);
      delayMs = Math.min(delayMs * 2, MARK_RETRY_MAX_MS);
    }
  }
}

