// D6: take the per-job lock (fence = INCR job:fence:{id}, D4), waiting ≤ 50 ms;
// busy → the caller NAKs 100 ms. The lease renews itself while the handler
// runs and is released in `finally`, so a thrown handler never strands it.
import { decodeRecord, jobKeys, type JobRecord } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';

import type { HandlerOutcome } from '@cordum/bus';

export const BUSY_NAK_MS = 100;
/**
 * P334: the shortest wait of a THROTTLE (its `retry_after_ms`, which can be 1 ms). Not BUSY_NAK_MS:
 * escalateBusy tells a busy NAK by that value, so a throttle of ≤ 100 ms waited the lock-busy
 * schedule instead (up to 5 s a delivery).
 */
export const THROTTLE_MIN_WAIT_MS = BUSY_NAK_MS + 1;

/**
 * D6 + D8: the first busy NAK waits 100 ms, later ones follow the D8 schedule
 * 0.1/0.5/1/2/5 s. A fixed 100 ms would spend all 20 deliveries (D8 MaxDeliver)
 * in about 2 s, so a result arriving while a crashed or frozen replica's lock
 * (30 s TTL) is still in Redis would be dropped by JetStream and its job end
 * TIMEOUT although it succeeded. 20 deliveries on this schedule span ≈ 80 s.
 */
const BUSY_SCHEDULE_MS = [100, 500, 1_000, 2_000, 5_000];

export function busyNakMs(deliveryCount: number): number {
  const i = Math.min(Math.max(deliveryCount, 1), BUSY_SCHEDULE_MS.length) - 1;
  return BUSY_SCHEDULE_MS[i] ?? 5_000;
}

/**
 * A locked handler's outcome for JetStream: the lock found busy is a busy NAK, and every busy or
 * fenced NAK gets the escalating delay of this delivery (escalateBusy).
 */
export function lockedOutcome(r: { busy: true } | { busy: false; value: HandlerOutcome }, deliveryCount: number): HandlerOutcome {
  return escalateBusy(r.busy ? { kind: 'nak', delayMs: BUSY_NAK_MS } : r.value, deliveryCount);
}

/** Replaces a busy/fenced NAK (BUSY_NAK_MS) with the escalating delay for this delivery. */
export function escalateBusy(outcome: HandlerOutcome, deliveryCount: number): HandlerOutcome {
  return outcome.kind === 'nak' && outcome.delayMs === BUSY_NAK_MS ? { kind: 'nak', delayMs: busyNakMs(deliveryCount) } : outcome;
}

export async function withJobLock<T>(ctx: SchedulerContext, jobId: string, fn: (lease: Lease) => Promise<T>): Promise<{ busy: true } | { busy: false; value: T }> {
  const lease = await ctx.locks.acquire({
    key: jobKeys.lock(jobId),
    fenceKey: jobKeys.fence(jobId),
    ttlMs: ctx.config.jobLockTtlMs,
    owner: ctx.instanceId,
    waitMs: ctx.config.lockWaitMs,
  });
  if (!lease) return { busy: true };
  lease.startAutoRenew(() => ctx.logger.warn('job lock lost while handling', { job_id: jobId }));
  try {
    return { busy: false, value: await fn(lease) };
  } finally {
    lease.stopAutoRenew();
    await lease.releaseOrRetry({ onError: (err) => ctx.logger.warn('job lock release failed, retrying until its TTL', { job_id: jobId, err }) });
  }
}

/**
 * A job lock was taken on an id with no record (an expired or foreign id, or one that outlived a
 * Redis that lost its data): the lock's INCR has just created the fence counter, which only a
 * create gives a TTL. It gets the job TTL here, so such an id leaves no key that never expires (P30).
 */
async function noRecord(ctx: SchedulerContext, jobId: string): Promise<null> {
  await ctx.store.expireFence(jobId);
  return null;
}

/** The job record, read by a handler that holds its lock (withJobLock); see noRecord for a missing one. */
export async function readLocked(ctx: SchedulerContext, jobId: string): Promise<JobRecord | null> {
  return (await ctx.store.getJob(jobId)) ?? noRecord(ctx, jobId);
}

/**
 * withJobLock that also reads the job record inside the acquiring script
 * (acquire-read-3.lua): the record the handler gets is the one its lease guards,
 * in one round trip instead of acquire + HGETALL (issue 7). A handler whose last
 * write released the lock in the same script (`release: true`) marks the lease
 * released, and the `finally` below then costs nothing.
 */
export async function withLockedJob<T>(ctx: SchedulerContext, jobId: string, fn: (lease: Lease, job: JobRecord | null) => Promise<T>): Promise<{ busy: true } | { busy: false; value: T }> {
  const got = await ctx.locks.acquireAndRead({
    key: jobKeys.lock(jobId),
    fenceKey: jobKeys.fence(jobId),
    readKey: jobKeys.meta(jobId),
    ttlMs: ctx.config.jobLockTtlMs,
    owner: ctx.instanceId,
    waitMs: ctx.config.lockWaitMs,
  });
  if (!got) return { busy: true };
  const { lease } = got;
  lease.startAutoRenew(() => ctx.logger.warn('job lock lost while handling', { job_id: jobId }));
  try {
    const job = decodeRecord(got.hash) ?? (await noRecord(ctx, jobId));
    return { busy: false, value: await fn(lease, job) };
  } finally {
    lease.stopAutoRenew();
    await lease.releaseOrRetry({ onError: (err) => ctx.logger.warn('job lock release failed, retrying until its TTL', { job_id: jobId, err }) });
  }
}

/** After a write made with `release: true` committed, the lock is gone: forget the lease without a round trip. */
export function releasedBy<R extends { ok: boolean }>(lease: Lease, r: R, released = true): R {
  if (r.ok && released) lease.markReleased();
  return r;
}
