// The safety-kernel passthrough behind /api/v1/policy/* (CONTRACT §2): the
// gateway adds auth, tenancy and validation, the kernel decides. Answers are
// mapped to the HTTP shapes here so routes never see gRPC.
import { Decision, GrpcStatus, SafetyKernel, grpcClientFor, parseGrpcAddress, publicKernelError, splitGrpcAddress, type GrpcClient, type PolicyCheckResponse } from '@cordum/protocol';
import { ApiError, retryAfter } from '../http/errors';
import type { EvaluateRequest } from './evaluator';
import { errorText } from '@cordum/service-kit';

export const POLICY_CALL_DEADLINE_MS = 5_000;

export type DecisionName = 'allow' | 'deny' | 'require_human' | 'throttle' | 'allow_with_constraints';

export interface PolicyDecision {
  decision: DecisionName | 'unspecified';
  reason: string;
  rule_id: string;
  policy_snapshot: string;
  approval_required: boolean;
  retry_after_ms: number;
  constraints?: { max_runtime_ms: number; max_retries: number; max_artifact_bytes: number; max_concurrent_jobs: number };
  trace?: { rule_id: string; matched: boolean; why: string }[];
}

export interface PolicySnapshots {
  current: string;
  items: { id: string; loaded_at: string; rule_count: number }[];
}

export interface PolicyRules {
  snapshot: string;
  default_decision: string;
  items: { id: string; decision: string; reason: string; source: string; spec: unknown }[];
}

export interface PolicyAdmin {
  evaluate(req: EvaluateRequest): Promise<PolicyDecision>;
  explain(req: EvaluateRequest): Promise<PolicyDecision>;
  simulate(req: EvaluateRequest, candidateYaml: string): Promise<PolicyDecision>;
  snapshots(): Promise<PolicySnapshots>;
  rules(): Promise<PolicyRules>;
  close(): void;
}

const NAMES: Record<Decision, DecisionName | 'unspecified'> = {
  [Decision.UNSPECIFIED]: 'unspecified',
  [Decision.ALLOW]: 'allow',
  [Decision.DENY]: 'deny',
  [Decision.REQUIRE_HUMAN]: 'require_human',
  [Decision.THROTTLE]: 'throttle',
  [Decision.ALLOW_WITH_CONSTRAINTS]: 'allow_with_constraints',
};

export function decisionFromResponse(r: PolicyCheckResponse, withTrace: boolean): PolicyDecision {
  const out: PolicyDecision = {
    decision: NAMES[r.decision] ?? 'unspecified',
    reason: r.reason,
    rule_id: r.ruleId,
    policy_snapshot: r.policySnapshot,
    approval_required: r.approvalRequired,
    retry_after_ms: Number(r.retryAfterMs),
  };
  if (r.constraints) {
    const c = r.constraints;
    out.constraints = { max_runtime_ms: Number(c.maxRuntimeMs), max_retries: c.maxRetries, max_artifact_bytes: Number(c.maxArtifactBytes), max_concurrent_jobs: c.maxConcurrentJobs };
  }
  if (withTrace) out.trace = r.trace.map((t) => ({ rule_id: t.ruleId, matched: t.matched, why: t.why }));
  return out;
}

/** gRPC failures → API errors: a rejected candidate policy is the caller's fault (400), everything else a dependency fault (503). */
export function kernelErrorToApi(err: unknown): ApiError {
  const code = (err as { code?: unknown }).code;
  const details = (err as { details?: unknown }).details;
  const msg = typeof details === 'string' && details !== '' ? details : errorText(err);
  // The kernel's load error of the caller's own candidate; anything else says only the status (P222).
  if (code === GrpcStatus.INVALID_ARGUMENT) return new ApiError('invalid_policy', { message: msg, cause: err });
  return new ApiError('safety_unavailable', { message: `safety kernel unavailable: ${publicKernelError(err)}`, cause: err });
}

/** The wait a `simulation_busy` answer gives: a simulation takes well under a second. */
const SIMULATION_RETRY_AFTER_MS = 1_000;

/** P146: the kernel runs simulations one at a time with a short queue and refuses the rest RESOURCE_EXHAUSTED (429). */
function simulationErrorToApi(err: unknown): ApiError {
  if ((err as { code?: unknown }).code === GrpcStatus.RESOURCE_EXHAUSTED) return new ApiError('simulation_busy', { ...retryAfter(SIMULATION_RETRY_AFTER_MS), cause: err });
  return kernelErrorToApi(err);
}

type KernelClient = GrpcClient<typeof SafetyKernel extends { method: infer M } ? M : never>;

/**
 * One client per kernel of a comma list (P206), used in turn; a call answered UNAVAILABLE (a
 * kernel not ready, P48, or one that is down) goes to the next kernel in the time left, each
 * kernel once. These calls record nothing (velocity is only read), so asking again is safe.
 * Before, one round-robin channel served them: a kernel that was up but not ready answered
 * every other /policy/evaluate 503 and every other /policy/explain from its file alone.
 */
export function createPolicyAdmin(address: string, deadlineMs = POLICY_CALL_DEADLINE_MS): PolicyAdmin {
  parseGrpcAddress(address); // the D23 checks of the whole list, with their messages
  const clients: KernelClient[] = splitGrpcAddress(address).map((target: string) => grpcClientFor(SafetyKernel, target));
  let next = 0;
  const call = async <T>(fn: (client: KernelClient, deadline: { deadlineMs: number }) => Promise<T>, toApi: (err: unknown) => ApiError = kernelErrorToApi): Promise<T> => {
    const until = Date.now() + deadlineMs;
    const first = next;
    next = (next + 1) % clients.length;
    let last: unknown;
    for (let i = 0; i < clients.length; i++) {
      const left = until - Date.now();
      if (i > 0 && left <= 0) break;
      try {
        return await fn(clients[(first + i) % clients.length] as KernelClient, { deadlineMs: Math.max(1, left) });
      } catch (err) {
        last = err;
        if ((err as { code?: unknown }).code !== GrpcStatus.UNAVAILABLE) break;
      }
    }
    throw toApi(last);
  };
  return {
    evaluate: (req) => call(async (client, o) => decisionFromResponse(await client.evaluate(req, o), false)),
    explain: (req) => call(async (client, o) => decisionFromResponse(await client.explain(req, o), true)),
    simulate: (req, candidateYaml) => call(async (client, o) => decisionFromResponse(await client.simulate({ ...req, candidatePolicyYaml: candidateYaml }, o), true), simulationErrorToApi),
    snapshots: () =>
      call(async (client, o) => {
        const r = await client.listSnapshots({}, o);
        return { current: r.current, items: r.snapshots.map((s) => ({ id: s.id, loaded_at: new Date(Number(s.loadedAtMs)).toISOString(), rule_count: s.ruleCount })) };
      }),
    rules: () =>
      call(async (client, o) => {
        const r = await client.listRules({}, o);
        return {
          snapshot: r.snapshot,
          default_decision: r.defaultDecision,
          items: r.rules.map((x) => {
            let spec: unknown = {};
            try {
              spec = JSON.parse(x.specJson || '{}') as unknown;
            } catch {
              spec = {};
            }
            return { id: x.id, decision: x.decision, reason: x.reason, source: x.source, spec };
          }),
        };
      }),
    close: () => {
      for (const c of clients) c.close();
    },
  };
}
