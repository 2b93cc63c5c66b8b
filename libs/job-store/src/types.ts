import type { ApprovalRecord } from './approval';
import type { JobState } from './states';

export type Priority = 'interactive' | 'batch' | 'critical';

export interface SafetyRecord {
  /** allow | deny | require_human | throttle | allow_with_constraints | unavailable */
  decision: string;
  reason: string;
  ruleId: string;
  policySnapshot: string;
}

/** D2: written with the DISPATCHED state, before the publish; `published` flips after the flush. */
export interface DispatchRecord {
  dispatchId: string;
  attempt: number;
  published: boolean;
  subject: string;
  workerId?: string;
  /** The chosen worker advertised start acks and the publish went to its direct subject (D1 b). */
  startAck?: boolean;
}

/** The identity and policy-relevant fields every job carries, from submit through the record. */
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

/**
 * The DLQ entry a job was retried from (POST /api/v1/dlq/{id}/retry): that job's id, and every
 * principal and actor of the jobs in the retry chain, oldest first. They may not approve the new
 * job (its submitter is whoever retried it), as they may not approve their own.
 */
export interface RetriedFrom {
  jobId: string;
  submitters: string[];
}

export interface NewJob extends JobIdentity {
  id: string;
  retriedFrom?: RetriedFrom;
  traceId: string;
  prompt: string;
  context: unknown;
  contextMode?: string;
  deadlineMs?: number;
  initialState: 'PENDING' | 'APPROVAL_REQUIRED' | 'DENIED';
  safety?: SafetyRecord;
  /**
   * P321: when the submit's request arrived (clusterNow at the gateway's edge): the record's
   * createdAt, so "submit →" latencies and a deadline count from the request, with the
   * authentication, rate limit and the gateway's own policy decision in them. The create's time
   * when absent (or earlier).
   */
  submittedAt?: number;
}

/**
 * Why the latest look for a worker found none (P230): `no_worker_for_topic`, no live worker serves
 * the topic (the job is parked until one does, P15); `workers_draining`, the only ones that do are
 * draining; `no_matching_worker`, some that take jobs do, but none has the job's placement labels
 * or its pool's requires; `workers_not_listening`, no worker serves the topic (parked, as for
 * `no_worker_for_topic`) although workers of its pools are live: each names other job subjects in
 * its handshake, and routing sends a job only to a worker that names its topic (P253, P261).
 */
export type WorkerWaitReason = 'no_worker_for_topic' | 'workers_draining' | 'no_matching_worker' | 'workers_not_listening';

/** P142: a wait for a worker. `reason` and `lastTryAt` (P230) are absent on waits recorded before them. */
export interface WorkerWait {
  since: number;
  tries: number;
  reason?: WorkerWaitReason;
  lastTryAt?: number;
}

export interface JobRecord extends JobIdentity {
  id: string;
  retriedFrom?: RetriedFrom;
  state: JobState;
  traceId: string;
  attempts: number;
  contextPtr: string;
  resultPtr?: string;
  error?: { code: string; message: string };
  workerId?: string;
  safety?: SafetyRecord;
  /** jobRequestHash() when the job was last held for approval (D18 binding). */
  holdHash?: string;
  /**
   * P166: the state a keyed job (idempotencyKey set) was created in, so a retry of its key
   * answers as its submit did (D25), whatever the scheduler decided since.
   */
  submitState?: 'PENDING' | 'APPROVAL_REQUIRED' | 'DENIED';
  /** The latest approval or rejection (D18). */
  approval?: ApprovalRecord;
  dispatch?: DispatchRecord;
  contextMode?: string;
  deadlineAt?: number;
  /** D13: dispatch attempt limit for this job (constraints.max_retries, else the scheduler default). */
  maxAttempts?: number;
  /**
   * constraints.max_runtime_ms of the policy decision that allowed the job (P65): each attempt
   * ends TIMEOUT `max_runtime_exceeded` once it has been out this long since its dispatch.
   */
  maxRuntimeMs?: number;
  /**
   * constraints.max_artifact_bytes of the policy decision that allowed the job (P71): a SUCCEEDED
   * result whose stored output (result and artifacts behind redis:// pointers) is larger ends
   * FAILED `artifact_too_large`, and that output is deleted.
   */
  maxArtifactBytes?: number;
  /**
   * P70: the concurrency group (slotGroup) and limit of the policy decision that gave the job
   * `max_concurrent_jobs`; set when it first waits for a slot or takes one. Its terminal write
   * gives the slot (or its place in the queue) back.
   */
  concurrency?: { group: string; limit: number };
  /** D13: no-worker tries over the job's life (each wait is bounded on its own, `workerWait`). */
  scheduleTries?: number;
  /**
   * P142: the job's latest wait for a worker: when it began and the tries made in it. D13's bound
   * (SCHEDULER_SCHEDULE_MAX_TRIES tries or SCHEDULER_SCHEDULE_MAX_WAIT) applies to each wait; one
   * that began before the job was last ready (its approval) or dispatched is over.
   */
  workerWait?: WorkerWait;
  /** Attempts a worker refused before starting them (`worker_busy`, D48): not counted against maxAttempts. */
  busyRefusals?: number;
  /**
   * JetStream sequence of the last result applied without a dispatch id (CAPs "applies to the
   * current attempt"): its redelivery finds this and is not applied to the attempt it started
   * (decisions.md P41).
   */
  resultSeq?: number;
  /**
   * Digests of the signatures of the signed results applied without a dispatch id, newest last
   * (at most 32): the same bytes published again (a replay, with a new stream sequence and any
   * msg id) are not applied to a later attempt (decisions.md P197).
   */
  resultSigs?: string[];
  createdAt: number;
  updatedAt: number;
  dispatchedAt?: number;
  finishedAt?: number;
}

/** Fields a transition may change; identity fields (id, tenant, state, createdAt) are not patchable. */
/**
 * Fields a transition writes. `error` and `resultPtr` may be `null`: the field is cleared (stored as
 * JSON null, which every read drops), as a final result without them does to an earlier attempt's (P267).
 */
export type JobPatch = Partial<Omit<JobRecord, 'id' | 'tenant' | 'state' | 'createdAt' | 'updatedAt' | 'error' | 'resultPtr'>> & {
  error?: JobRecord['error'] | null;
  resultPtr?: string | null;
};

export interface DlqEntry {
  job_id: string;
  tenant: string;
  topic: string;
  reason: string;
  reason_code: string;
  last_state: JobState;
  attempts: number;
  created_at: string;
}

export type TransitionResult =
  | { ok: true; job: JobRecord; from: JobState }
  | { ok: false; reason: 'not_found' | 'illegal_transition' | 'fenced' | 'state_mismatch'; current?: JobRecord };

/** Longest error code and message a job keeps from a packet (P73): the record, its DLQ entry and every API answer carry them. */
export const MAX_ERROR_CODE_CHARS = 128;
export const MAX_ERROR_MESSAGE_CHARS = 4_096;

/** A job error from text another component sent (a worker's result, a bus cancel), cut to the bounds above. */
export function boundedError(code: string, message: string): { code: string; message: string } {
  const cut = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
  return { code: cut(code, MAX_ERROR_CODE_CHARS), message: cut(message, MAX_ERROR_MESSAGE_CHARS) };
}
