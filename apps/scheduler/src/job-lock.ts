// D6: take the per-job lock (fence = INCR job:fence:{id}, D4), waiting ≤ 50 ms;
// busy → the caller NAKs 100 ms. The lease renews itself while the handler
// runs and is released in `finally`, so a thrown handler never strands it.
import { jobKeys } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';

import type { HandlerOutcome } from '@cordum/bus';

export const BUSY_NAK_MS = 100;

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
    await lease.release().catch((err: unknown) => ctx.logger.warn('job lock release failed', { job_id: jobId, err }));
  }
}
