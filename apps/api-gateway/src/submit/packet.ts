// The JobRequest BusPacket published on sys.job.submit (CONTRACT §3, D9).
import {
  ActorType,
  JobPriority,
  JobRequestSchema,
  create,
  encodePacket,
  newPacket,
} from '@cordum/protocol';
import { jobKeys, type JobRecord, type Priority } from '@cordum/job-store';

const PRIORITY: Readonly<Record<Priority, JobPriority>> = {
  interactive: JobPriority.INTERACTIVE,
  batch: JobPriority.BATCH,
  critical: JobPriority.CRITICAL,
};

export function priorityToProto(p: Priority): JobPriority {
  return PRIORITY[p];
}

export function actorTypeToProto(t: string | undefined): ActorType {
  if (t === 'human') return ActorType.HUMAN;
  if (t === 'service') return ActorType.SERVICE;
  return ActorType.UNSPECIFIED;
}

/** D9: attempt 0, approval revision 0 at submit; a retried publish reuses it so JetStream dedups. */
export function submitMsgId(jobId: string, attempt = 0, approvalRevision = 0): string {
  return `jobreq:${jobId}:${attempt}:${approvalRevision}`;
}

export function encodeJobRequest(job: JobRecord, senderId: string, deadlineMs: number | undefined): Uint8Array {
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
    meta: {
      tenantId: job.tenant,
      actorId: job.actorId ?? '',
      actorType: actorTypeToProto(job.actorType),
      idempotencyKey: job.idempotencyKey ?? '',
      capability: job.capability ?? '',
      riskTags: job.riskTags,
      requires: job.requires,
    },
  });
  return encodePacket(newPacket(senderId, { case: 'jobRequest', value: request }, job.traceId));
}
