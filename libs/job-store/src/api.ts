// The exact GET /api/v1/jobs/{id} shape (CONTRACT §2): snake_case, RFC 3339 times with ms.
import { approvalSuperseded } from './approval';
import type { JobRecord, WorkerWaitReason } from './types';
import { recordedWorkerWait } from './worker-wait';

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

/** The latest approval or rejection of a held job (D18). */
export interface ApiApproval {
  status: 'approved' | 'rejected';
  by: string;
  at: string;
  job_hash: string;
  policy_snapshot: string;
  rule_id: string;
  reason?: string;
  revision: number;
  /** P258: the job was held again after this approval; it does not cover the current (or last) hold. */
  superseded?: boolean;
}

/** P230: why a waiting job has not been dispatched: the scheduler's latest look found no worker. */
export interface ApiWorkerWait {
  since: string;
  tries: number;
  reason?: WorkerWaitReason;
  last_try_at?: string;
}

export interface ApiJob {
  id: string;
  state: string;
  topic: string;
  tenant: string;
  trace_id: string;
  priority: string;
  labels: Record<string, string>;
  attempts: number;
  context_ptr: string;
  result_ptr: string | null;
  result: unknown;
  error?: { code: string; message: string };
  worker_id?: string;
  safety: { decision: string; reason: string; rule_id: string; policy_snapshot: string };
  approval?: ApiApproval;
  /** P70: the max_concurrent_jobs group the job counts against. */
  concurrency?: { group: string; limit: number };
  /** P230: a PENDING or RETRYING job's current wait for a worker (D13). */
  worker_wait?: ApiWorkerWait;
  created_at: string;
  updated_at: string;
  dispatched_at?: string;
  retried_from?: string;
  finished_at?: string;
}

export function jobToApi(job: JobRecord, result: unknown): ApiJob {
  const out: ApiJob = {
    id: job.id,
    state: job.state,
    topic: job.topic,
    tenant: job.tenant,
    trace_id: job.traceId,
    priority: job.priority,
    labels: job.labels ?? {},
    attempts: job.attempts,
    context_ptr: job.contextPtr,
    result_ptr: job.resultPtr ?? null,
    result: result ?? null,
    safety: {
      decision: job.safety?.decision ?? '',
      reason: job.safety?.reason ?? '',
      rule_id: job.safety?.ruleId ?? '',
      policy_snapshot: job.safety?.policySnapshot ?? '',
    },
    created_at: iso(job.createdAt) ?? '',
    updated_at: iso(job.updatedAt) ?? '',
  };
  // A SUCCEEDED job keeps the error of an earlier, retried attempt in its record; shown as the
  // job's error it would read as a failure to any client that checks `error`.
  if (job.error && job.state !== 'SUCCEEDED') out.error = { code: job.error.code, message: job.error.message };
  if (job.workerId) out.worker_id = job.workerId;
  if (job.approval) {
    const a = job.approval;
    out.approval = { status: a.status, by: a.by, at: iso(a.at) ?? '', job_hash: a.jobHash, policy_snapshot: a.policySnapshot, rule_id: a.ruleId, revision: a.revision };
    if (a.reason) out.approval.reason = a.reason;
    if (approvalSuperseded(job)) out.approval.superseded = true;
  }
  if (job.concurrency) out.concurrency = { group: job.concurrency.group, limit: job.concurrency.limit };
  const wait = job.state === 'PENDING' || job.state === 'RETRYING' ? recordedWorkerWait(job) : undefined;
  if (wait) {
    out.worker_wait = { since: iso(wait.since) ?? '', tries: wait.tries };
    if (wait.reason) out.worker_wait.reason = wait.reason;
    const lastTryAt = iso(wait.lastTryAt);
    if (lastTryAt) out.worker_wait.last_try_at = lastTryAt;
  }
  const dispatchedAt = iso(job.dispatchedAt);
  if (dispatchedAt) out.dispatched_at = dispatchedAt;
  if (job.retriedFrom) out.retried_from = job.retriedFrom.jobId;
  const finishedAt = iso(job.finishedAt);
  if (finishedAt) out.finished_at = finishedAt;
  return out;
}
