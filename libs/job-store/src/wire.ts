// One mapping from a job (or a submit command shaped like one) to the CAP wire
// fields that the gateway, the scheduler and the kernel all read: priority and
// actor enums, JobMetadata, and the PolicyCheckRequest the kernel evaluates.
import { ActorType, JobPriority, type JobMetadataSchema, type MessageInitShape, type PolicyCheckRequestSchema } from '@cordum/protocol';
import type { Priority } from './types';

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

/** What JobMetadata is built from: a JobRecord or the gateway's submit command. */
export interface JobIdentity {
  tenant: string;
  topic: string;
  priority: Priority;
  principalId: string;
  labels: Record<string, string>;
  memoryId?: string;
  actorId?: string;
  actorType?: string;
  idempotencyKey?: string;
  capability?: string;
  riskTags: string[];
  requires: string[];
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
