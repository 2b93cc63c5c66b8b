// Approval binding (BEHAVIOURS §6, D18): a held job is approved against a hash
// of its request, so a request that changed after the hold (record fields or
// the stored input at ctx:<id>) cannot ride on an approval given for another.
// The gateway computes it at hold and approve time, the scheduler again at
// intake; all of them use this one function.
import { createHash } from 'node:crypto';
import type { JobRecord } from './types';

/** What a human approved; written on the job by the approve route, read by the scheduler's re-check. */
export interface ApprovalRecord {
  status: 'approved' | 'rejected';
  /** principal_id of the approver. */
  by: string;
  /** epoch ms */
  at: number;
  /** jobRequestHash() the approver saw (and the gateway re-verified). */
  jobHash: string;
  /** Snapshot of the policy that held the job, as verified at approval time. */
  policySnapshot: string;
  /** The rule whose REQUIRE_HUMAN the approval satisfies (D18: only that rule's). */
  ruleId: string;
  reason?: string;
  /** 1 for the first approval of the job, +1 for each later one (D9 msg id `jobreq:<id>:0:<revision>`). */
  revision: number;
  /**
   * P258: the job was held again after this approval (another rule, or a changed request), so it
   * does not cover the job's last hold; set by the scheduler's re-hold.
   */
  superseded?: boolean;
}

/**
 * Whether the job was held again after its approval (P258), so the approval does not cover the
 * job's last hold. This release's scheduler marks it (`superseded`); one of an earlier release,
 * still running during a rolling upgrade or back after a rollback, did not, and its re-hold is
 * known by what it left (P261): a last decision that is a REQUIRE_HUMAN the approval does not
 * cover (another rule, or another request hash; an approved job that went keeps the approved
 * rule's decision and hold hash). Not a retry stopped `approval_required` under another rule
 * (P131): that job ran under its approval, and was never held again.
 */
export function approvalSuperseded(job: Pick<JobRecord, 'approval' | 'safety' | 'holdHash' | 'error'>): boolean {
  const a = job.approval;
  if (a?.status !== 'approved') return false;
  if (a.superseded) return true;
  const s = job.safety;
  if (s?.decision !== 'require_human' || job.error?.code === 'approval_required') return false;
  return s.ruleId !== a.ruleId || (job.holdHash !== undefined && job.holdHash !== a.jobHash);
}

/** The stored input at ctx:<id> (CONTRACT §5). */
export interface StoredInput {
  prompt?: unknown;
  context?: unknown;
}

/** Object keys sorted, no whitespace; arrays keep their order. Stable across replicas. */
function canonical(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (typeof value === 'object') {
    const rec = value as Record<string, unknown>;
    const parts = Object.keys(rec)
      .sort()
      .filter((k) => rec[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(rec[k])}`);
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * SHA-256 hex over everything that defines what the job would do and what the
 * policy looks at: tenant, topic, priority, submitter, labels, memory, actor,
 * capability, risk tags, requires, context mode, deadline, and the stored
 * prompt and context. Lists that the policy treats as sets are sorted.
 */
export function jobRequestHash(job: Pick<JobRecord, 'tenant' | 'topic' | 'priority' | 'principalId' | 'labels' | 'memoryId' | 'actorId' | 'actorType' | 'capability' | 'riskTags' | 'requires' | 'contextMode' | 'deadlineAt'>, input: StoredInput | null): string {
  const doc = {
    tenant: job.tenant,
    topic: job.topic,
    priority: job.priority,
    principal_id: job.principalId,
    labels: job.labels ?? {},
    memory_id: job.memoryId ?? null,
    actor_id: job.actorId ?? null,
    actor_type: job.actorType ?? null,
    capability: job.capability ?? null,
    risk_tags: [...(job.riskTags ?? [])].sort(),
    requires: [...(job.requires ?? [])].sort(),
    context_mode: job.contextMode ?? null,
    deadline_at: job.deadlineAt ?? null,
    prompt: input?.prompt ?? null,
    context: input?.context ?? null,
  };
  return createHash('sha256').update(canonical(doc), 'utf8').digest('hex');
}
