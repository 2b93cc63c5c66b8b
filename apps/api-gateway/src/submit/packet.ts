// The JobRequest BusPacket published on sys.job.submit (CONTRACT §3, D9).
import {
  JobRequestSchema,
  create,
  encodePacket,
  newPacket,
} from '@cordum/protocol';
import { jobKeys, jobMetadataInit, priorityToProto, type JobRecord } from '@cordum/job-store';

/** D9: attempt 0, approval revision 0 at submit; a retried publish reuses it so JetStream dedups. */
export function submitMsgId(jobId: string, attempt = 0, approvalRevision = 0): string {
  return `jobreq:${jobId}:${attempt}:${approvalRevision}`;
}

export function encodeJobRequest(job: JobRecord, senderId: string, deadlineMs: number | bigint | undefined): Uint8Array {
  const request = create(JobRequestSchema, {
    jobId: job.id,
    topic: job.topic,
    priority: priorityToProto(job.priority),
    contextPtr: jobKeys.ctxPtr(job.id),
    tenantId: job.tenant,
    principalId: job.principalId,
    labels: job.labels,
    memoryId: job.memoryId ?? '',
    budget: deadlineMs !== undefined ? { deadlineMs: BigInt(deadlineMs) } : undefined,
    meta: jobMetadataInit(job),
  });
  return encodePacket(newPacket(senderId, { case: 'jobRequest', value: request }, job.traceId));
}
