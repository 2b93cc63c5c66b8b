// BusPacket builders for what the scheduler publishes.
import {
  ActorType,
  DispatchIdentitySchema,
  JobPriority,
  JobProgressSchema,
  JobRequestSchema,
  JobStatus,
  clone,
  create,
  newPacket,
  type BusPacket,
  type JobRequest,
} from '@cordum/protocol';
import type { DispatchRecord, JobRecord, JobState } from '@cordum/job-store';

const PRIORITY: Record<JobRecord['priority'], JobPriority> = {
  interactive: JobPriority.INTERACTIVE,
  batch: JobPriority.BATCH,
  critical: JobPriority.CRITICAL,
};

/** JobStatus for the sys.job.state broadcast; `message` carries the exact state name. */
export const STATE_STATUS: Record<JobState, JobStatus> = {
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

function actorType(t: string | undefined): ActorType {
  if (t === 'human') return ActorType.HUMAN;
  if (t === 'service') return ActorType.SERVICE;
  return ActorType.UNSPECIFIED;
}

/**
 * The JobRequest sent to the worker. Built on the submitted request when we
 * have it (keeps env, budget, hints a CAP client set), else from the record;
 * the dispatch identity always comes from the record (D2).
 */
export function jobRequestFor(job: JobRecord, dispatch: DispatchRecord, base?: JobRequest): JobRequest {
  const req = base
    ? clone(JobRequestSchema, base)
    : create(JobRequestSchema, {
        jobId: job.id,
        topic: job.topic,
        priority: PRIORITY[job.priority] ?? JobPriority.UNSPECIFIED,
        tenantId: job.tenant,
        principalId: job.principalId,
        labels: job.labels,
        memoryId: job.memoryId ?? '',
        meta: {
          tenantId: job.tenant,
          actorId: job.actorId ?? '',
          actorType: actorType(job.actorType),
          idempotencyKey: job.idempotencyKey ?? '',
          capability: job.capability ?? '',
          riskTags: job.riskTags,
          requires: job.requires,
          labels: job.labels,
        },
      });
  req.jobId = job.id;
  req.topic = job.topic;
  req.contextPtr = job.contextPtr;
  req.dispatch = create(DispatchIdentitySchema, {
    dispatchId: dispatch.dispatchId,
    attempt: BigInt(dispatch.attempt),
    assignedWorkerId: dispatch.workerId ?? '',
  });
  return req;
}

export function dispatchPacket(senderId: string, job: JobRecord, req: JobRequest): BusPacket {
  return newPacket(senderId, { case: 'jobRequest', value: req }, job.traceId || undefined);
}

export function statePacket(senderId: string, job: JobRecord): BusPacket {
  const progress = create(JobProgressSchema, { jobId: job.id, status: STATE_STATUS[job.state], message: job.state });
  return newPacket(senderId, { case: 'jobProgress', value: progress }, job.traceId || undefined);
}
