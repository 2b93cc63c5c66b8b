// One mapping from a job (or a submit command shaped like one) to the CAP wire
// fields that the gateway, the scheduler and the kernel all read: priority and
// actor enums, JobMetadata, and the PolicyCheckRequest the kernel evaluates.
import { randomUUID } from 'node:crypto';
import {
  ActorType,
  JobPriority,
  JobStatus,
  encodeProgressPacket,
  type JobMetadataSchema,
  type MessageInitShape,
  type PolicyCheckRequestSchema,
} from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import type { JobState } from './states';
import type { JobIdentity, JobRecord, Priority } from './types';

const PRIORITY: Readonly<Record<Priority, JobPriority>> = {
  interactive: JobPriority.INTERACTIVE,
  batch: JobPriority.BATCH,
  critical: JobPriority.CRITICAL,
};

export function priorityToProto(p: Priority): JobPriority {
  return PRIORITY[p] ?? JobPriority.UNSPECIFIED;
}

export function actorTypeToProto(t: string | undefined): ActorType {
  if (t === 'human') return ActorType.HUMAN;
  if (t === 'service') return ActorType.SERVICE;
  return ActorType.UNSPECIFIED;
}

export function jobMetadataInit(j: JobIdentity, o: { withLabels?: boolean } = {}): MessageInitShape<typeof JobMetadataSchema> {
  return {
    tenantId: j.tenant,
    actorId: j.actorId ?? '',
    actorType: actorTypeToProto(j.actorType),
    idempotencyKey: j.idempotencyKey ?? '',
    capability: j.capability ?? '',
    riskTags: j.riskTags,
    requires: j.requires,
    ...(o.withLabels ? { labels: j.labels } : {}),
  };
}

/**
 * The JobRequest `budget` a job was submitted with, rebuilt from its record: `deadline_ms` is
 * relative to submit (D46) and the record keeps the absolute `deadlineAt`. Every later publish of
 * the job's request (an approval's republish, a redispatch, a retry) carries the same budget.
 */
export function jobBudgetInit(j: Pick<JobRecord, 'createdAt' | 'deadlineAt'>): { deadlineMs: bigint } | undefined {
  return j.deadlineAt !== undefined ? { deadlineMs: BigInt(Math.max(1, j.deadlineAt - j.createdAt)) } : undefined;
}

/** The request the kernel's Check/Evaluate sees for a job (CONTRACT §4). */
export function policyCheckInit(jobId: string, j: JobIdentity, o: { withMetaLabels?: boolean } = {}): MessageInitShape<typeof PolicyCheckRequestSchema> {
  return {
    jobId,
    topic: j.topic,
    tenant: j.tenant,
    priority: priorityToProto(j.priority),
    principalId: j.principalId,
    labels: j.labels,
    memoryId: j.memoryId ?? '',
    meta: jobMetadataInit(j, { withLabels: o.withMetaLabels }),
  };
}

/** JobStatus for the sys.job.state broadcast; `message` carries the exact state name. */
export const STATE_STATUS: Readonly<Record<JobState, JobStatus>> = {
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

/**
 * D15: the sys.job.state broadcast after a committed transition, from whichever
 * service committed it, encoded: a BusPacket with JobProgress{job_id, status,
 * message = the exact state name}, a fresh trace id when the job has none.
 * Hand-encoded (encodeProgressPacket), the same bytes as encodePacket would give.
 */
export function encodeStatePacket(senderId: string, job: Pick<JobRecord, 'id' | 'state' | 'traceId'>, nowMs = clusterNow()): Uint8Array {
  return encodeProgressPacket({
    traceId: job.traceId || randomUUID(),
    senderId,
    createdAtMs: nowMs,
    jobId: job.id,
    status: STATE_STATUS[job.state],
    message: job.state,
  });
}

/**
 * A packet (a result, a cancel) that names an attempt other than the job's current one: its
 * dispatch id is set and differs. One without a dispatch id is for the current attempt (CONTRACT §3).
 */
export function namesOtherAttempt(named: { dispatchId: string } | undefined, job: Pick<JobRecord, 'dispatch'>): boolean {
  return !!named?.dispatchId && named.dispatchId !== job.dispatch?.dispatchId;
}
