// Submit-time policy evaluation (BEHAVIOURS §1.1, D19). The gateway asks the
// kernel's Evaluate with a 2 s deadline; any failure (down, timeout, garbage)
// becomes `unavailable` and the job is accepted PENDING: the scheduler's Check
// is the enforcement point, so failing open here never lets a denied job run.
import { Decision, createPolicyClient, publicKernelError, type MessageInitShape, type PolicyCheckRequestSchema } from '@cordum/protocol';
import { errorText } from '@cordum/service-kit';

export const EVALUATE_DEADLINE_MS = 2_000;

export type EvaluateRequest = MessageInitShape<typeof PolicyCheckRequestSchema>;

export type Verdict =
  | { kind: 'allow'; decision: 'allow' | 'allow_with_constraints'; reason: string; ruleId: string; policySnapshot: string }
  | { kind: 'deny'; reason: string; ruleId: string; policySnapshot: string }
  | { kind: 'require_human'; reason: string; ruleId: string; policySnapshot: string }
  | { kind: 'throttle'; reason: string; ruleId: string; policySnapshot: string; retryAfterMs: number }
  | { kind: 'unavailable'; reason: string; /** The whole error, for the server's log only (P222). */ detail?: string };

/** Narrow port so the submit service never sees gRPC. */
export interface PolicyEvaluator {
  evaluate(req: EvaluateRequest): Promise<Verdict>;
  close(): void;
}

export function createKernelEvaluator(address: string, deadlineMs = EVALUATE_DEADLINE_MS): PolicyEvaluator {
  // Evaluate goes as a message on a long-lived Decide stream (P17), failing fast when no kernel is reachable.
  const client = createPolicyClient(address);
  return {
    async evaluate(req) {
      let res;
      try {
        res = await client.evaluate(req, deadlineMs);
      } catch (err) {
        // The reason is stored on the job and shown to its tenant: no kernel address in it (P222).
        return { kind: 'unavailable', reason: `safety kernel unavailable: ${publicKernelError(err)}`, detail: errorText(err) };
      }
      const base = { reason: res.reason, ruleId: res.ruleId, policySnapshot: res.policySnapshot };
      switch (res.decision) {
        case Decision.ALLOW:
          return { kind: 'allow', decision: 'allow', ...base };
        case Decision.ALLOW_WITH_CONSTRAINTS:
          return { kind: 'allow', decision: 'allow_with_constraints', ...base };
        case Decision.DENY:
          return { kind: 'deny', ...base };
        case Decision.REQUIRE_HUMAN:
          return { kind: 'require_human', ...base };
        case Decision.THROTTLE:
          return { kind: 'throttle', ...base, retryAfterMs: Number(res.retryAfterMs) };
        case Decision.UNSPECIFIED:
          // A kernel that answers without a decision is treated like no kernel (D19).
          return { kind: 'unavailable', reason: 'safety kernel returned no decision' };
        default:
          // A value this build does not know (proto3 keeps it; a newer kernel during an upgrade):
          // no decision we can act on, so D19's fail-open, not a TypeError answered 500 (P184).
          return { kind: 'unavailable', reason: `safety kernel returned unknown decision ${String(res.decision)}` };
      }
    },
    close() {
      client.close();
    },
  };
}
