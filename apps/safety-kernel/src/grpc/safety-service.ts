import { GrpcStatus, KERNEL_NOT_READY, decideHandler, grpcError, type DecideHandler, type PolicyCheckRequest, type SafetyKernel } from '@cordum/protocol';
import type { GrpcServiceImpl } from '@cordum/protocol';
import { clusterNow, isRedisUnavailable } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import type { DecisionCache } from '../cache/decision-cache';
import { evaluatePolicy, simulationVelocity, type EvalResult, type VelocityMode, type VelocityPort } from '../policy/evaluator';
import { PolicyLoadError, type PolicySnapshot } from '@cordum/config-overlay';
import { canonicalJson } from '../policy/canonical';
import { parsePolicy, toSnapshot } from '../policy/parse';
import type { SafetyMetrics } from '../metrics';
import type { SnapshotStore } from '../snapshots/store';
import { decisionLabel, toCheckInput, toResponse } from './convert';
import { createSimulationGate } from './simulation-gate';
import { errorText } from '@cordum/service-kit';

export interface SafetyServiceDeps {
  store: SnapshotStore;
  velocity: VelocityPort;
  metrics: SafetyMetrics;
  logger: Logger;
  /** `file` or `bundle:<id>` for a rule of the active policy (ListRules). */
  ruleSource?: (ruleId: string) => string;
  /** Absent = cache off (SAFETY_DECISION_CACHE_TTL 0). Used by Check and Evaluate only. */
  cache?: DecisionCache;
  now?: () => number;
  /**
   * False until the first config load applied the policy bundles (P48): Check and Evaluate
   * are refused UNAVAILABLE rather than decided by the file's rules alone. Absent = always.
   */
  policyComplete?: () => boolean;
  /** Why the policy is incomplete (the refused section's error and its fix), appended to the UNAVAILABLE message. */
  incompleteReason?: () => string | undefined;
}

type SafetyKernelMethods = typeof SafetyKernel extends { method: infer M } ? M : never;

/** Redis trouble is UNAVAILABLE so the scheduler's breaker and fail mode (D21) take over. */
function mapError(err: unknown): Error {
  if (err instanceof PolicyLoadError) return grpcError(GrpcStatus.INVALID_ARGUMENT, err.message);
  if (isRedisUnavailable(err)) return grpcError(GrpcStatus.UNAVAILABLE, `redis unavailable: ${errorText(err)}`);
  return err instanceof Error ? err : new Error(String(err));
}

/** The kernel's handlers; `decide.drain()` ends the Decide streams at shutdown. */
export type SafetyService = GrpcServiceImpl<SafetyKernelMethods> & { decide: DecideHandler };

export function createSafetyService(deps: SafetyServiceDeps): SafetyService {
  const now = deps.now ?? clusterNow;
  const simulations = createSimulationGate({ onRefused: () => deps.metrics.simulationsRefused.inc() });

  const active = (): PolicySnapshot => {
    const s = deps.store.active;
    if (!s) throw grpcError(GrpcStatus.UNAVAILABLE, 'no policy loaded');
    return s;
  };

  /**
   * The policy in force, for the calls that decide or describe it: Check and Evaluate (P48), and
   * Explain, ListRules and ListSnapshots (P206). A kernel whose policy is incomplete (the bundles
   * not loaded) enforces nothing, so it answers UNAVAILABLE `kernel not ready…` with the reason,
   * and the callers' clients ask another kernel: an explanation or a rule list of the file alone
   * describes a policy no kernel enforces. Simulate evaluates the caller's candidate instead.
   */
  const inForce = (): PolicySnapshot => {
    if (deps.policyComplete && !deps.policyComplete()) {
      const why = deps.incompleteReason?.();
      throw grpcError(GrpcStatus.UNAVAILABLE, `${KERNEL_NOT_READY}: the policy bundles in config are not loaded yet${why ? `: ${why}` : ''}`);
    }
    return active();
  };

  const decide = async (req: PolicyCheckRequest, mode: VelocityMode): Promise<EvalResult> => {
    const end = deps.metrics.checkDuration.startTimer();
    try {
      // inForce() and cache.get run in the same tick, so the lookup always uses the
      // snapshot that is current right now (the cache resets to it if it changed).
      const snap = inForce();
      const input = toCheckInput(req);
      const cached = deps.cache?.get(snap.id, input);
      // A cached result never touched a velocity window, so serving it for Check records nothing
      // that evaluation would have recorded (D20).
      const r = cached ?? (await evaluatePolicy(snap, input, deps.velocity, mode));
      if (!cached) deps.cache?.put(input, r);
      deps.metrics.decisions.inc({ decision: decisionLabel(r.verdict) });
      return r;
    } catch (err) {
      throw mapError(err);
    } finally {
      end();
    }
  };

  const check = async (req: PolicyCheckRequest) => {
    const r = await decide(req, 'record');
    deps.logger.debug('check', { job_id: req.jobId, topic: req.topic, tenant: req.tenant, decision: decisionLabel(r.verdict), rule_id: r.ruleId });
    return toResponse(r, false, req.jobId);
  };
  // Same evaluation as Check, but velocity is only read (D20): the gateway's
  // pre-check must not use up a tenant's budget before the scheduler's Check.
  const evaluate = async (req: PolicyCheckRequest) => toResponse(await decide(req, 'peek'), false, req.jobId);

  return {
    check,
    evaluate,
    // Check and Evaluate as messages on a long-lived stream (P17): the same functions. An
    // answer that cannot be encoded fails its own request (INTERNAL), never the stream.
    decide: decideHandler(
      { check, evaluate },
      {
        onUnencodable: (err, req, answer) =>
          deps.logger.error('policy answer could not be encoded, answered INTERNAL', { job_id: req?.jobId, topic: req?.topic, rule_id: answer.ruleId, err: errorText(err) }),
      },
    ),
    async explain(req) {
      try {
        return toResponse(await evaluatePolicy(inForce(), toCheckInput(req), deps.velocity, 'peek'), true, req.jobId);
      } catch (err) {
        throw mapError(err);
      }
    },
    async simulate(req) {
      if (!req.candidatePolicyYaml.trim()) throw grpcError(GrpcStatus.INVALID_ARGUMENT, 'candidate_policy_yaml is required');
      // One at a time, paced, so a candidate's parse never holds Checks past their deadline (P146).
      return simulations.run(async () => {
        try {
          const candidate = toSnapshot(parsePolicy(req.candidatePolicyYaml), now());
          return toResponse(await evaluatePolicy(candidate, toCheckInput(req), simulationVelocity(active(), candidate, deps.velocity), 'peek'), true, req.jobId);
        } catch (err) {
          throw mapError(err);
        }
      });
    },
    async listSnapshots() {
      const current = inForce().id;
      const list = await deps.store.list().catch((err: unknown) => {
        throw mapError(err);
      });
      return {
        current,
        snapshots: list.map((s) => ({ id: s.id, loadedAtMs: BigInt(s.loadedAtMs), ruleCount: s.ruleCount })),
      };
    },
    // The active (effective) policy's rules in evaluation order, for GET /api/v1/policy/rules.
    listRules() {
      const snap = inForce();
      return {
        snapshot: snap.id,
        defaultDecision: snap.policy.default_decision,
        rules: snap.policy.rules.map((r) => {
          const { id, decision, reason, ...spec } = r;
          return { id, decision, reason: reason ?? '', source: deps.ruleSource?.(id) ?? '', specJson: canonicalJson(spec) };
        }),
      };
    },
  };
}
