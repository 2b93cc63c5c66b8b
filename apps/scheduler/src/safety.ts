// The SafetyKernel `Check` port and what intake does with its answer. The
// scheduler is the enforcement point (D19): anything but a clear answer is
// `unavailable`, and the job is held. Only when the kernel could not be asked
// (unreachable, deadline, not ready, breaker open) does `input_fail_mode` apply:
// closed (the default) holds the job, open lets it run with an audit alert. An
// error the kernel answered for the job itself (`kernelError`) always holds it.
// The shared breaker (D21, safety-breaker.ts) wraps the port. Approved jobs are
// re-checked (D18).
import { subjects } from '@cordum/bus';
import {
  AlertSeverity,
  Decision,
  GrpcStatus,
  SystemAlertSchema,
  create,
  encodePacket,
  createPolicyClient,
  newPacket,
  publicKernelError,
  type PolicyCheckResponse,
} from '@cordum/protocol';
import { policyCheckInit, type JobRecord, type SafetyRecord } from '@cordum/job-store';
import type { SchedulerContext } from './context';
import { errorText } from '@cordum/service-kit';

export type FailMode = 'open' | 'closed';

/** The `scheduler` config section (CONTRACT §6); env gives the defaults, config overrides live. */
export interface FailModes {
  /** Kernel unavailable at Check: closed = hold and retry (NAK 5 s), open = allow + audit alert. */
  inputFailMode: FailMode;
  /** D17: accepted and applied, not used yet (output policy is reserved). */
  outputFailMode: FailMode;
  outputPolicyEnabled: boolean;
}

export type SafetyVerdict =
  | { kind: 'allow'; record: SafetyRecord; maxRetries?: number; maxRuntimeMs?: number; maxConcurrentJobs?: number; maxArtifactBytes?: number }
  | { kind: 'deny'; record: SafetyRecord }
  /** `holdHash`: jobRequestHash() at the hold (set by resolveSafety), bound by a later approval (D18). */
  | { kind: 'require_human'; record: SafetyRecord; holdHash?: string }
  | { kind: 'throttle'; record: SafetyRecord; retryAfterMs: number }
  /**
   * No decision. Without `kernelError` the kernel could not be asked (unreachable, deadline,
   * not ready, breaker open): `input_fail_mode` applies and the breaker counts it. With it the
   * kernel (or the call) failed for this request in a way that is not unavailability (INTERNAL,
   * INVALID_ARGUMENT, an unknown decision, ...): the job is held as with `closed` whatever
   * `input_fail_mode` says, and the breaker does not count it (see UNAVAILABLE_CODES).
   */
  | { kind: 'unavailable'; error: string; kernelError?: true; /** What a job record and a tenant's alert may say (P222); `error` is for the logs. */ publicError?: string };

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
      const runtime = Number(res.constraints?.maxRuntimeMs ?? 0n);
      const concurrent = res.constraints?.maxConcurrentJobs ?? 0;
      const artifactBytes = Number(res.constraints?.maxArtifactBytes ?? 0n);
      return {
        kind: 'allow',
        record: rec('allow_with_constraints'),
        ...(max > 0 ? { maxRetries: max } : {}),
        ...(runtime > 0 ? { maxRuntimeMs: runtime } : {}),
        ...(concurrent > 0 ? { maxConcurrentJobs: concurrent } : {}),
        ...(artifactBytes > 0 ? { maxArtifactBytes: artifactBytes } : {}),
      };
    }
    case Decision.DENY:
      return { kind: 'deny', record: rec('deny') };
    case Decision.REQUIRE_HUMAN:
      return { kind: 'require_human', record: rec('require_human') };
    case Decision.THROTTLE:
      return { kind: 'throttle', record: rec('throttle'), retryAfterMs: Number(res.retryAfterMs) };
    case Decision.UNSPECIFIED:
      return { kind: 'unavailable', error: 'kernel answered DECISION_UNSPECIFIED (held whatever input_fail_mode says)', kernelError: true };
  }
  return { kind: 'unavailable', error: `kernel answered unknown decision ${String(res.decision)} (held whatever input_fail_mode says)`, kernelError: true };
}

/**
 * The gRPC codes that mean the kernel could not be asked: down or unreachable, not ready (P48:
 * UNAVAILABLE `kernel not ready`, `no policy loaded`, Redis unavailable), too slow, or the call
 * cancelled under it (a kernel shutting down, a dropped stream). Only these are what
 * `input_fail_mode: open` and the breaker are for. Every other failure (INTERNAL: an answer the
 * kernel could not encode, or a fault evaluating this job; INVALID_ARGUMENT; UNKNOWN;
 * RESOURCE_EXHAUSTED: a request too big; an error with no gRPC code) comes from this request
 * or a kernel fault, not from unavailability: allowing it fail-open let a job that reached a
 * broken rule bypass the policy, and counting it let a few such jobs open the breaker and so
 * run every job fail-open (or hold every job).
 */
export const UNAVAILABLE_CODES: ReadonlySet<number> = new Set([GrpcStatus.UNAVAILABLE, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.CANCELLED]);

/** A failed Check call as a verdict (see UNAVAILABLE_CODES). */
export function verdictFromError(err: unknown): SafetyVerdict {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number' && UNAVAILABLE_CODES.has(code)) return { kind: 'unavailable', error: errorText(err), publicError: publicKernelError(err) };
  const name = typeof code === 'number' ? (GrpcStatus[code] ?? `code ${code}`) : 'no gRPC status';
  return { kind: 'unavailable', error: `kernel error ${name}, not unavailability (held whatever input_fail_mode says): ${errorText(err)}`, kernelError: true };
}

/** How often the Check channel retries a lost kernel connection (grpc-js default would back off to 5 s). */
export const KERNEL_RECONNECT_BACKOFF_MS = 1_000;

export function grpcSafetyChecker(address: string, deadlineMs: number): SafetyChecker {
  // A returning kernel is reconnected within ~1 s, and a call made while the channel reconnects
  // waits for it (up to the deadline) instead of failing at once: a half-open probe right after
  // the kernel's return then succeeds rather than reopening the breaker for another 10 s (D21).
  // Check goes as a message on a long-lived Decide stream (P17).
  const client = createPolicyClient(address, {
    waitForReady: true,
    channelOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': KERNEL_RECONNECT_BACKOFF_MS },
  });
  return {
    async check(job) {
      try {
        const res = await client.check(policyCheckInit(job.id, job, { withMetaLabels: true }), deadlineMs);
        return verdictFrom(res);
      } catch (err) {
        return verdictFromError(err);
      }
    },
    close: () => client.close(),
  };
}

/** Audit alert code for a job allowed because the kernel was unavailable (input_fail_mode=open). */
export const FAIL_OPEN_ALERT_CODE = 'safety.input_fail_open';

/**
 * Check plus what the scheduler adds to the kernel's answer:
 * - unavailable (kernel down, breaker open) with input_fail_mode=open → allow,
 *   recorded as decision `unavailable`, with one audit alert per job; never for a
 *   `kernelError`, which is held in both modes;
 * - REQUIRE_HUMAN for a job a human approved (D18): ALLOW when the approval is for
 *   that same rule and the request still hashes to what was approved; otherwise a
 *   (new) hold bound to the current request hash. DENY always wins.
 */
export async function resolveSafety(ctx: SchedulerContext, job: JobRecord): Promise<SafetyVerdict> {
  const v = await ctx.safety.check(job);
  switch (v.kind) {
    case 'unavailable': {
      if (v.kernelError || ctx.failModes().inputFailMode !== 'open') return v;
      ctx.metrics.failOpen.inc();
      ctx.logger.warn('safety kernel unavailable, FAIL-OPEN: allowing job (input_fail_mode=open)', { job_id: job.id, topic: job.topic, err: v.error });
      // The record and the alert reach the job's tenant (GET /jobs, the stream): no kernel address (P222).
      await emitFailOpenAlert(ctx, job, v.publicError ?? v.error);
      return { kind: 'allow', record: { decision: 'unavailable', reason: `allowed by input_fail_mode=open: ${v.publicError ?? v.error}`, ruleId: '', policySnapshot: '' } };
    }
    case 'require_human': {
      const hash = await ctx.store.requestHash(job);
      const a = job.approval;
      if (a?.status === 'approved' && a.ruleId === v.record.ruleId && a.jobHash === hash) {
        return { kind: 'allow', record: { ...v.record, reason: `approved by ${a.by}${v.record.reason ? `: ${v.record.reason}` : ''}` } };
      }
      if (a?.status === 'approved') {
        ctx.logger.info('approval does not cover the current decision, holding again', { job_id: job.id, approved_rule: a.ruleId, rule_id: v.record.ruleId, hash_matches: a.jobHash === hash });
      }
      return { ...v, holdHash: hash };
    }
    case 'allow':
    case 'deny':
    case 'throttle':
      return v;
  }
}

/** One SystemAlert per job on sys.audit.export (durable; the msg id dedups a redelivery) and on sys.alert (WebSocket clients). */
async function emitFailOpenAlert(ctx: SchedulerContext, job: JobRecord, error: string): Promise<void> {
  const alert = create(SystemAlertSchema, {
    level: 'WARN',
    message: `job ${job.id} allowed without a policy decision: safety kernel unavailable (input_fail_mode=open)`,
    component: 'scheduler',
    code: FAIL_OPEN_ALERT_CODE,
    severity: AlertSeverity.WARNING,
    sourceComponent: ctx.instanceId,
    traceId: job.traceId,
    details: { job_id: job.id, tenant: job.tenant, topic: job.topic, principal_id: job.principalId, error },
  });
  const bytes = encodePacket(newPacket(ctx.instanceId, { case: 'alert', value: alert }, job.traceId || undefined));
  try {
    await ctx.bus.publish(subjects.audit, bytes, { msgId: `${subjects.audit}:${FAIL_OPEN_ALERT_CODE}:${job.id}` });
  } catch (err) {
    ctx.logger.error('fail-open audit alert not exported', { job_id: job.id, err: errorText(err) });
  }
  try {
    ctx.bus.publishCore(subjects.alert, bytes);
  } catch (err) {
    ctx.logger.debug('fail-open alert broadcast failed', { job_id: job.id, err: errorText(err) });
  }
}
