// D2 dispatch order, under the job lock:
//   SCHEDULED|RETRYING → DISPATCHED {published:false, new DispatchIdentity} (fenced)
//   → lease.safeToAct() (D3) → core publish → await flush → markPublished (fenced)
// The caller releases the lock and only then acks the bus message.
// Residual window: a crash after the flush and before `published=true` leaves
// an attempt that may have reached a worker but looks unpublished; the
// redelivered submit republishes the SAME dispatch id, so worker-sdk (which
// runs only the current dispatch id) still runs it once.
import { randomUUID } from 'node:crypto';
import { encodePacket, type JobRequest } from '@cordum/protocol';
import type { DispatchRecord, JobRecord, JobState } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';
import { dispatchPacket, jobRequestFor } from './packets';
import type { RouteDecision } from './routing';

export type DispatchOutcome =
  | { kind: 'dispatched'; job: JobRecord }
  /** The lease is no longer safe (D3) or a fenced write was refused: do nothing more. */
  | { kind: 'lost'; reason: string }
  /** The job moved on under us (state mismatch): the packet is stale. */
  | { kind: 'stale'; state?: JobState };

type Routed = Extract<RouteDecision, { kind: 'worker' } | { kind: 'untracked' }>;

export async function dispatch(ctx: SchedulerContext, lease: Lease, job: JobRecord, route: Routed, base?: JobRequest): Promise<DispatchOutcome> {
  const from: JobState = job.state === 'RETRYING' ? 'RETRYING' : 'SCHEDULED';
  const now = Date.now();
  const d: DispatchRecord = {
    dispatchId: randomUUID(),
    attempt: job.attempts + 1,
    published: false,
    subject: route.subject,
    ...(route.kind === 'worker' ? { workerId: route.worker.workerId } : {}),
  };
  const w = await ctx.store.transition(job.id, 'DISPATCHED', {
    token: lease.token,
    from: [from],
    patch: { dispatch: d, attempts: d.attempt, dispatchedAt: now, ...(d.workerId ? { workerId: d.workerId } : {}) },
  });
  if (!w.ok) return w.reason === 'fenced' ? { kind: 'lost', reason: 'fenced' } : { kind: 'stale', state: w.current?.state };
  return publishAttempt(ctx, lease, w.job, d, base);
}

/**
 * Publishes the attempt recorded on the job (also used to republish an
 * unpublished attempt whose owner died, D2) and marks it published.
 */
export async function publishAttempt(ctx: SchedulerContext, lease: Lease, job: JobRecord, d: DispatchRecord, base?: JobRequest): Promise<DispatchOutcome> {
  if (!lease.safeToAct()) return { kind: 'lost', reason: 'lease_unsafe' };
  const packet = dispatchPacket(ctx.instanceId, job, jobRequestFor(job, d, base));
  ctx.bus.publishCore(d.subject, encodePacket(packet));
  await ctx.bus.flush();
  if (d.workerId) ctx.workers.noteDispatched(d.workerId);
  ctx.metrics.dispatchLatency.observe(Math.max(0, Date.now() - job.createdAt) / 1000);
  const m = await ctx.store.markPublished(job.id, d.dispatchId, lease.token);
  if (!m.ok) {
    // Published but not marked: the residual window of D2, logged for the reconciler's audit.
    ctx.logger.warn('dispatch published but not marked', { job_id: job.id, dispatch_id: d.dispatchId, reason: m.reason });
    return m.reason === 'fenced' ? { kind: 'lost', reason: 'fenced_after_publish' } : { kind: 'dispatched', job };
  }
  ctx.logger.debug('job dispatched', { job_id: job.id, dispatch_id: d.dispatchId, attempt: d.attempt, subject: d.subject });
  return { kind: 'dispatched', job: m.job };
}
