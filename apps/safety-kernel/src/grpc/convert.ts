import { ActorType, Decision, type PolicyCheckRequest, type MessageInitShape, type PolicyCheckResponseSchema } from '@cordum/protocol';
import type { CheckInput, EvalResult, Verdict } from '../policy/evaluator';

export function toCheckInput(req: PolicyCheckRequest): CheckInput {
  const meta = req.meta;
  return {
    jobId: req.jobId,
    tenant: req.tenant || (meta?.tenantId ?? ''),
    topic: req.topic,
    principalId: req.principalId,
    capability: meta?.capability ?? '',
    riskTags: meta?.riskTags ?? [],
    requires: meta?.requires ?? [],
    labels: req.labels,
    actorType: meta?.actorType === ActorType.HUMAN ? 'human' : meta?.actorType === ActorType.SERVICE ? 'service' : '',
  };
}

export function toDecision(v: Verdict): Decision {
  switch (v) {
    case 'allow':
      return Decision.ALLOW;
    case 'deny':
      return Decision.DENY;
    case 'require_approval':
      return Decision.REQUIRE_HUMAN;
    case 'throttle':
      return Decision.THROTTLE;
    case 'allow_with_constraints':
      return Decision.ALLOW_WITH_CONSTRAINTS;
  }
}

/** Metric label and log name: the names SafetyRecord uses (require_human, not require_approval). */
export function decisionLabel(v: Verdict): string {
  return v === 'require_approval' ? 'require_human' : v;
}

/**
 * `jobId` is the request's: a hold names the job it holds in `approval_ref` (P204, as Cordum's
 * kernel does), also when the result came from the decision cache, whose entries are shared by
 * requests of other jobs.
 */
export function toResponse(r: EvalResult, withTrace: boolean, jobId: string): MessageInitShape<typeof PolicyCheckResponseSchema> {
  const out: MessageInitShape<typeof PolicyCheckResponseSchema> = {
    decision: toDecision(r.verdict),
    reason: r.reason,
    policySnapshot: r.snapshotId,
    ruleId: r.ruleId,
    approvalRequired: r.verdict === 'require_approval',
    approvalRef: r.verdict === 'require_approval' ? jobId : '',
    retryAfterMs: BigInt(r.retryAfterMs ?? 0),
  };
  if (r.constraints) {
    out.constraints = {
      maxRuntimeMs: BigInt(r.constraints.max_runtime_ms ?? 0),
      maxRetries: r.constraints.max_retries ?? 0,
      maxArtifactBytes: BigInt(r.constraints.max_artifact_bytes ?? 0),
      maxConcurrentJobs: r.constraints.max_concurrent_jobs ?? 0,
    };
  }
  if (withTrace) out.trace = r.trace.map((t) => ({ ruleId: t.ruleId, matched: t.matched, why: t.why }));
  return out;
}

