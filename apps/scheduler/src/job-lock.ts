// D6: take the per-job lock (fence = INCR job:fence:{id}, D4), waiting ≤ 50 ms;
// busy → the caller NAKs 100 ms. The lease renews itself while the handler
// runs and is released in `finally`, so a thrown handler never strands it.
import { jobKeys } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';

export const BUSY_NAK_MS = 100;

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
