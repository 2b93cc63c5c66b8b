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

export interface NewJob {
  id: string;
  tenant: string;
  topic: string;
  traceId: string;
  priority: Priority;
  labels: Record<string, string>;
  prompt: string;
  context: unknown;
  principalId: string;
  actorId?: string;
  actorType?: string;
  capability?: string;
  riskTags: string[];
  requires: string[];
  memoryId?: string;
  contextMode?: string;
  idempotencyKey?: string;
  deadlineMs?: number;
  initialState: 'PENDING' | 'APPROVAL_REQUIRED' | 'DENIED';
  safety?: SafetyRecord;
}

export interface JobRecord {
  id: string;
  tenant: string;
  topic: string;
  state: JobState;
  traceId: string;
  priority: Priority;
  labels: Record<string, string>;
  attempts: number;
  contextPtr: string;
  resultPtr?: string;
  error?: { code: string; message: string };
  workerId?: string;
  safety?: SafetyRecord;
  dispatch?: DispatchRecord;
  principalId: string;
  actorId?: string;
  actorType?: string;
  capability?: string;
  riskTags: string[];
  requires: string[];
  memoryId?: string;
  contextMode?: string;
  idempotencyKey?: string;
  deadlineAt?: number;
  /** D13: dispatch attempt limit for this job (constraints.max_retries, else the scheduler default). */
  maxAttempts?: number;
  /** D13: no-worker waits, bounded by the replayer. */
  scheduleTries?: number;
  /** Attempts a worker refused before starting them (`worker_busy`, D48): not counted against maxAttempts. */
  busyRefusals?: number;
  createdAt: number;
  updatedAt: number;
  dispatchedAt?: number;
  finishedAt?: number;
}

/** Fields a transition may change; identity fields (id, tenant, state, createdAt) are not patchable. */
export type JobPatch = Partial<Omit<JobRecord, 'id' | 'tenant' | 'state' | 'createdAt' | 'updatedAt'>>;

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
