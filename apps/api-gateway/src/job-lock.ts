// The per-job lock as the gateway takes it for cancel, approve, reject and a failed submit's
// FAILED write (D5). CONTRACT §5: 30 s, renewed every TTL/3 while the operation runs, so a slow
// Redis cannot let it expire under a fenced write. Released at the end; a release Redis refuses
// is retried in the background until the TTL (P29), as the scheduler does. A lease left by a
// killed replica blocks its job for the TTL at most.
import { jobKeys } from '@cordum/job-store';
import type { Lease, Locks } from '@cordum/locks';
import type { Logger } from '@cordum/service-kit';
import { storeCall } from './http/store-call';

export const JOB_LOCK_TTL_MS = 30_000;
/** D5: a gateway write waits at most this long for the job lock, else 409 job_busy. */
export const JOB_LOCK_WAIT_MS = 2_000;

export interface JobLockDeps {
  locks: Locks;
  instanceId: string;
  logger: Pick<Logger, 'warn'>;
}

/** The job's lock, renewing itself, or null when it stayed busy for `waitMs` (0: one try). */
export async function acquireJobLock(deps: JobLockDeps, jobId: string, waitMs = JOB_LOCK_WAIT_MS): Promise<Lease | null> {
  const o = { key: jobKeys.lock(jobId), fenceKey: jobKeys.fence(jobId), ttlMs: JOB_LOCK_TTL_MS, owner: deps.instanceId };
  const lease = waitMs > 0 ? await deps.locks.acquire({ ...o, waitMs }) : await deps.locks.tryAcquire(o);
  lease?.startAutoRenew(() => deps.logger.warn('job lock lost while holding it; the fenced write will be refused', { job_id: jobId }));
  return lease;
}

export async function releaseJobLock(deps: JobLockDeps, lease: Lease, jobId: string): Promise<void> {
  lease.stopAutoRenew();
  await lease.releaseOrRetry({ onError: (err) => deps.logger.warn('job lock release failed, retrying until its TTL', { job_id: jobId, err }) });
}

/**
 * acquireJobLock for a request, bounded like its other store calls (503 after 3 s). The acquire
 * can still succeed after the request gave up on it (a 2 s wait, then a slow last try): that
 * lease is released at once, never left held and renewing for the life of the process.
 */
export function acquireJobLockForRequest(deps: JobLockDeps & { redisReady(): boolean }, jobId: string): Promise<Lease | null> {
  return storeCall(deps, 'job lock', () => acquireJobLock(deps, jobId), (late) => {
    if (late) void releaseJobLock(deps, late, jobId);
  });
}
