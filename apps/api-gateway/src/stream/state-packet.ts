// sys.job.state broadcast for transitions this gateway commits (D15): job
// creation at submit here, the scheduler's own transitions there. Same shape as
// the scheduler's: JobProgress{job_id, status, message = state name}.
import { JobProgressSchema, JobStatus, create, encodePacket, newPacket } from '@cordum/protocol';
import type { JobRecord, JobState } from '@cordum/job-store';

const STATE_STATUS: Record<JobState, JobStatus> = {
  PENDING: JobStatus.PENDING,
  APPROVAL_REQUIRED: JobStatus.PENDING,
  SCHEDULED: JobStatus.SCHEDULED,
  DISPATCHED: JobStatus.DISPATCHED,
  RUNNING: JobStatus.RUNNING,
  RETRYING: JobStatus.FAILED_RETRYABLE,
  SUCCEEDED: JobStatus.SUCCEEDED,
  FAILED: JobStatus.FAILED,
  CANCELLED: JobStatus.CANCELLED,
  TIMEOUT: JobStatus.TIMEOUT,
  DENIED: JobStatus.DENIED,
  OUTPUT_QUARANTINED: JobStatus.FAILED,
};

export function encodeStatePacket(senderId: string, job: JobRecord): Uint8Array {
  const progress = create(JobProgressSchema, { jobId: job.id, status: STATE_STATUS[job.state], message: job.state });
  return encodePacket(newPacket(senderId, { case: 'jobProgress', value: progress }, job.traceId || undefined));
}
