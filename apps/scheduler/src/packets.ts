// BusPacket builders for what the scheduler publishes.
import {
  JobRequestSchema,
  create,
  newPacket,
  type BusPacket,
  type JobRequest,
} from '@cordum/protocol';
import { jobBudgetInit, jobMetadataInit, priorityToProto, type DispatchRecord, type JobRecord } from '@cordum/job-store';

/**
 * The JobRequest sent to the worker, built from the record alone (with the budget rebuilt from
 * `deadlineAt`, so every attempt carries the same one) and the dispatch identity (D2). Never from
 * the submit packet: submits are not verified (P61), and a copy of one would have the scheduler
 * sign and send fields (env, meta, labels) that nobody checked and the policy never saw (P187).
 */
export function jobRequestFor(job: JobRecord, dispatch: DispatchRecord): JobRequest {
  return create(JobRequestSchema, {
    jobId: job.id,
    topic: job.topic,
    priority: priorityToProto(job.priority),
    contextPtr: job.contextPtr,
    tenantId: job.tenant,
    principalId: job.principalId,
    labels: job.labels,
    memoryId: job.memoryId ?? '',
    budget: jobBudgetInit(job),
    meta: jobMetadataInit(job, { withLabels: true }),
    dispatch: {
      dispatchId: dispatch.dispatchId,
      attempt: BigInt(dispatch.attempt),
      assignedWorkerId: dispatch.workerId ?? '',
    },
  });
}

export function dispatchPacket(senderId: string, job: JobRecord, req: JobRequest): BusPacket {
  return newPacket(senderId, { case: 'jobRequest', value: req }, job.traceId || undefined);
}
