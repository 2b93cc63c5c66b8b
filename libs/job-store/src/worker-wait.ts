// P142 / P230: a job's wait for a worker, shared by the scheduler (D13's bound) and the API (the
// `worker_wait` a client sees on a job that waits for one).
import type { JobRecord, WorkerWait } from './types';

/**
 * When the job was ready to go (P141): its approval for a job a human released, else its creation.
 * The scheduler's latency histograms count from here, so an hour's hold is not an hour of dispatch
 * latency.
 */
export function readyAt(job: JobRecord): number {
  return job.approval?.status === 'approved' ? Math.max(job.createdAt, job.approval.at) : job.createdAt;
}

/**
 * The job's recorded wait for a worker if it is still its current one: it began after the job was
 * last ready (an approval) and after its last dispatch. A wait that began before either is over.
 */
export function recordedWorkerWait(job: JobRecord): WorkerWait | undefined {
  const w = job.workerWait;
  return w && w.since >= Math.max(readyAt(job), job.dispatchedAt ?? 0) ? w : undefined;
}
