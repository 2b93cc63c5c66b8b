// BusPacket builders for what the scheduler publishes.
import {
  DispatchIdentitySchema,
  JobRequestSchema,
  clone,
  create,
  newPacket,
  type BusPacket,
  type JobRequest,
} from '@cordum/protocol';
import { jobBudgetInit, jobMetadataInit, priorityToProto, type DispatchRecord, type JobRecord } from '@cordum/job-store';

/**
 * The JobRequest sent to the worker. Built on the submitted request when we
 * have it (keeps env, budget, hints a CAP client set), else from the record
 * (with the budget rebuilt from `deadlineAt`, so a retry or redispatch keeps it);
 * the dispatch identity always comes from the record (D2).
 */
export function jobRequestFor(job: JobRecord, dispatch: DispatchRecord, base?: JobRequest): JobRequest {
  const req = base
    ? clone(JobRequestSchema, base)
    : create(JobRequestSchema, {
        jobId: job.id,
        topic: job.topic,
        priority: priorityToProto(job.priority),
        tenantId: job.tenant,
        principalId: job.principalId,
        labels: job.labels,
        memoryId: job.memoryId ?? '',
        budget: jobBudgetInit(job),
        meta: jobMetadataInit(job, { withLabels: true }),
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
