import { z } from 'zod';
import { topicPatternError } from './glob';

// Strict objects everywhere: an unknown key is a load error, never a silently
// ignored (and therefore silently allowing) match condition (CONTRACT §8).

const stringList = z.array(z.string().min(1));

export const matchSchema = z.strictObject({
  tenants: stringList.optional(),
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

export const constraintsSchema = z.strictObject({
  max_runtime_ms: z.number().int().positive().optional(),
  max_retries: z.number().int().nonnegative().optional(),
  max_artifact_bytes: z.number().int().positive().optional(),
  max_concurrent_jobs: z.number().int().positive().optional(),
});

export const velocitySchema = z.strictObject({
  max_requests: z.number().int().positive(),
  window_seconds: z.number().int().positive(),
  key: z.enum(['tenant', 'topic', 'principal']).default('tenant'),
});

export const RULE_DECISIONS = ['allow', 'deny', 'require_approval', 'require_human', 'allow_with_constraints', 'throttle'] as const;

export const ruleSchema = z
  .strictObject({
    id: z.string().min(1),
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
