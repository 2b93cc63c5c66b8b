// D11: after a failed submit publish, move our own PENDING job to FAILED under
// the job lock (D5: gateway writes are fenced like the scheduler's). Returns
// false when that cannot be proven (lock busy, job moved on, Redis error): the
// pending replayer then owns the job.
import { jobKeys, type JobStore } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';

const LOCK_TTL_MS = 10_000;

export async function failPendingJob(
  deps: { store: JobStore; locks: Locks; instanceId: string },
  jobId: string,
  code: string,
  message: string,
): Promise<boolean> {
  const lease = await deps.locks.tryAcquire({ key: jobKeys.lock(jobId), ttlMs: LOCK_TTL_MS, owner: deps.instanceId, fenceKey: jobKeys.fence(jobId) });
  if (!lease) return false;
  try {
    const res = await deps.store.transition(jobId, 'FAILED', { token: lease.token, from: ['PENDING'], patch: { error: { code, message } } });
    return res.ok;
  } finally {
    await lease.releaseOrRetry();
  }
}
