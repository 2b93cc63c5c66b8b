// D11: after a failed submit publish, move our own PENDING job to FAILED under
// the job lock (D5: gateway writes are fenced like the scheduler's). Returns
// false when that cannot be proven (lock busy, job moved on, Redis error): the
// pending replayer then owns the job. With SUBMIT_FAILED_CODE the job gets no
// DLQ entry (D11): the store's writeDlq files none for a job failedAtSubmit,
// on this write's side writes and on every later re-run.
import type { JobStore } from '@cordum/job-store';
import { acquireJobLock, releaseJobLock, type JobLockDeps } from '../job-lock';

export async function failPendingJob(deps: JobLockDeps & { store: JobStore }, jobId: string, code: string, message: string): Promise<boolean> {
  const lease = await acquireJobLock(deps, jobId, 0);
  if (!lease) return false;
  try {
    const res = await deps.store.transition(jobId, 'FAILED', { token: lease.token, from: ['PENDING'], patch: { error: { code, message } } });
    return res.ok;
  } finally {
    await releaseJobLock(deps, lease, jobId);
  }
}
