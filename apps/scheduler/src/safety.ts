// The SafetyKernel `Check` port. The scheduler is the enforcement point
// (D19): anything but a clear answer is `unavailable`, and the caller holds the
// job (fail closed). The shared breaker (D21) wraps this port in a later issue.
import {
  Decision,
  SafetyKernel,
  grpcClientFor,
  type PolicyCheckResponse,
} from '@cordum/protocol';
import { policyCheckInit, type JobRecord, type SafetyRecord } from '@cordum/job-store';

export type SafetyVerdict =
  | { kind: 'allow'; record: SafetyRecord; maxRetries?: number }
  | { kind: 'deny'; record: SafetyRecord }
  | { kind: 'require_human'; record: SafetyRecord }
  | { kind: 'throttle'; record: SafetyRecord; retryAfterMs: number }
  | { kind: 'unavailable'; error: string };

export interface SafetyChecker {
  check(job: JobRecord): Promise<SafetyVerdict>;
  close(): void;
}

export function verdictFrom(res: PolicyCheckResponse): SafetyVerdict {
  const rec = (decision: string): SafetyRecord => ({ decision, reason: res.reason, ruleId: res.ruleId, policySnapshot: res.policySnapshot });
  switch (res.decision) {
    case Decision.ALLOW:
      return { kind: 'allow', record: rec('allow') };
    case Decision.ALLOW_WITH_CONSTRAINTS: {
      const max = res.constraints?.maxRetries ?? 0;
      return { kind: 'allow', record: rec('allow_with_constraints'), ...(max > 0 ? { maxRetries: max } : {}) };
    }
    case Decision.DENY:
      return { kind: 'deny', record: rec('deny') };
    case Decision.REQUIRE_HUMAN:
      return { kind: 'require_human', record: rec('require_human') };
    case Decision.THROTTLE:
      return { kind: 'throttle', record: rec('throttle'), retryAfterMs: Number(res.retryAfterMs) };
    case Decision.UNSPECIFIED:
      return { kind: 'unavailable', error: 'kernel answered DECISION_UNSPECIFIED' };
  }
  return { kind: 'unavailable', error: `unknown decision ${String(res.decision)}` };
}

export function grpcSafetyChecker(address: string, deadlineMs: number): SafetyChecker {
  const client = grpcClientFor(SafetyKernel, address);
  return {
    async check(job) {
      try {
        const res = await client.check(
          policyCheckInit(job.id, job, { withMetaLabels: true }),
          { deadlineMs },
        );
        return verdictFrom(res);
      } catch (err) {
        return { kind: 'unavailable', error: err instanceof Error ? err.message : String(err) };
      }
    },
    close: () => client.close(),
  };
}
