import { TENANT_RE } from '@cordum/protocol';
import { z } from 'zod';
import { quoteValue, topicPatternError } from './glob';

// Strict objects everywhere: an unknown key is a load error, never a silently
// ignored (and therefore silently allowing) match condition (CONTRACT §8).

const stringList = z.array(z.string().min(1));

/**
 * D26 tenant names: the gateway's own rule for a job's tenant (@cordum/protocol TENANT_RE). A
 * rule naming any other tenant (`Acme`, ` acme`) could never match, so a deny written with it
 * silently allowed.
 */
export const POLICY_TENANT_RE = TENANT_RE;

const tenantName = z.string().superRefine((t, ctx) => {
  if (!POLICY_TENANT_RE.test(t)) {
    ctx.addIssue({ code: 'custom', message: `tenant ${quoteValue(t)} can never match: a tenant is ${TENANT_RE.source} (lower case, no spaces)` });
  }
});

export const matchSchema = z.strictObject({
  tenants: z.array(tenantName).optional(),
  topics: z
    .array(
      z.string().min(1).superRefine((p, ctx) => {
        const why = topicPatternError(p);
        if (why) ctx.addIssue({ code: 'custom', message: why });
      }),
    )
    .optional(),
  capabilities: stringList.optional(),
  risk_tags: stringList.optional(),
  requires: stringList.optional(),
  labels: z.record(z.string(), z.string()).optional(),
  actor_types: z.array(z.enum(['human', 'service'])).optional(),
});

/** The largest value of a proto `int32` (max_retries, max_concurrent_jobs in PolicyConstraints). */
export const INT32_MAX = 2_147_483_647;

/**
 * A constraint as PolicyConstraints (proto/cordum/v1/safety.proto) carries it: a whole number
 * from 1 to what its wire type holds. 0 is refused because on the wire it means "not set" (the
 * scheduler then applies no limit, or its default). A value past int32 made every Check that
 * reached the rule fail to encode (gRPC INTERNAL). The int64 fields stop at
 * Number.MAX_SAFE_INTEGER, the largest integer a JSON/YAML number keeps exactly.
 */
function wireCount(max: number, note: string) {
  return z.number().superRefine((v, ctx) => {
    if (!Number.isInteger(v) || v < 1 || v > max) ctx.addIssue({ code: 'custom', message: `must be a whole number from 1 to ${max}, got ${v} (${note})` });
  });
}

export const constraintsSchema = z.strictObject({
  max_runtime_ms: wireCount(Number.MAX_SAFE_INTEGER, 'milliseconds per attempt, while 0 on the wire means no limit').optional(),
  max_retries: wireCount(INT32_MAX, 'the total number of attempts, D13: 1 = run once with no retry, while 0 on the wire means the default, 3').optional(),
  max_artifact_bytes: wireCount(Number.MAX_SAFE_INTEGER, 'bytes, while 0 on the wire means no limit').optional(),
  max_concurrent_jobs: wireCount(INT32_MAX, 'jobs at once, an int32 on the wire, where 0 means no limit').optional(),
});

/**
 * P272: a velocity window's longest. The window is a Redis key's PEXPIRE in ms, which Redis takes
 * from a Lua number written as "%.17g": from 1e17 ms that is `1e+17`, which PEXPIRE refuses, and
 * every Check reaching the rule failed after its ZADD had run. 365 days is far past any rate.
 */
export const MAX_VELOCITY_WINDOW_SECONDS = 365 * 24 * 3600;

export const velocitySchema = z.strictObject({
  max_requests: z.number().int().positive(),
  window_seconds: wireCount(MAX_VELOCITY_WINDOW_SECONDS, 'seconds, 365 days at most'),
  key: z.enum(['tenant', 'topic', 'principal']).default('tenant'),
});

/**
 * The longest rule id: what an approver sends back as `rule_id` (POST /approvals/{id}/approve,
 * which refuses a longer one). A rule with a longer id held a job nobody could approve once it
 * was held again (P81 needs the rule id; P306): refused when the policy is written or loaded.
 */
export const MAX_RULE_ID_CHARS = 256;

export const RULE_DECISIONS = ['allow', 'deny', 'require_approval', 'require_human', 'allow_with_constraints', 'throttle'] as const;

export const ruleSchema = z
  .strictObject({
    id: z.string().min(1).max(MAX_RULE_ID_CHARS, `must be at most ${MAX_RULE_ID_CHARS} characters: an approver sends it back as rule_id`),
    description: z.string().optional(),
    match: matchSchema.default({}),
    decision: z.enum(RULE_DECISIONS),
    reason: z.string().optional(),
    constraints: constraintsSchema.optional(),
    velocity: velocitySchema.optional(),
  })
  .superRefine((r, ctx) => {
    if (r.decision === 'throttle' && !r.velocity) ctx.addIssue({ code: 'custom', path: ['velocity'], message: 'required when decision is throttle' });
    if (r.decision !== 'throttle' && r.velocity) ctx.addIssue({ code: 'custom', path: ['velocity'], message: 'only allowed when decision is throttle' });
    if (r.decision === 'allow_with_constraints' && !r.constraints)
      ctx.addIssue({ code: 'custom', path: ['constraints'], message: 'required when decision is allow_with_constraints' });
    // P313: `{}` loaded, and the job ran as a plain allow while its decision said constrained.
    if (r.decision === 'allow_with_constraints' && r.constraints && Object.values(r.constraints).every((v) => v === undefined))
      ctx.addIssue({ code: 'custom', path: ['constraints'], message: `set at least one of ${Object.keys(constraintsSchema.shape).join(', ')}: none constrains the job` });
    if (r.decision !== 'allow_with_constraints' && r.constraints)
      ctx.addIssue({ code: 'custom', path: ['constraints'], message: 'only allowed when decision is allow_with_constraints' });
  })
  // D22: require_human is an alias; normalising here keeps the snapshot id the same for both spellings.
  .transform((r) => ({ ...r, decision: r.decision === 'require_human' ? ('require_approval' as const) : r.decision }));

export const policySchema = z.strictObject({
  version: z.literal(1),
  default_decision: z.enum(['allow', 'deny']),
  rules: z.array(ruleSchema).default([]),
});

export type PolicyMatch = z.infer<typeof matchSchema>;
export type PolicyConstraintsSpec = z.infer<typeof constraintsSchema>;
export type VelocitySpec = z.infer<typeof velocitySchema>;
export type PolicyRule = z.infer<typeof ruleSchema>;
export type RuleDecision = PolicyRule['decision'];
export type Policy = z.infer<typeof policySchema>;

/** A loaded policy with its content hash (D22). */
export interface PolicySnapshot {
  readonly id: string;
  readonly policy: Policy;
  readonly loadedAtMs: number;
}
