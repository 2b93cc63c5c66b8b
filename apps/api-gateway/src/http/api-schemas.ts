// Response schemas of every route, in zod: the single source for the OpenAPI
// document (z.toJSONSchema) and for the tests that validate real responses.
// Strict objects: a field the code returns but the document does not list is
// a test failure, not silent drift. The config request schemas here are the
// ones routes/config.ts parses with, so the document cannot drift from them.
import { z } from 'zod';
import { SCOPES } from '@cordum/config-overlay';
import { JOB_STATES } from '@cordum/job-store';

const time = z.string().describe('RFC 3339 with milliseconds');
const jobState = z.enum(JOB_STATES as unknown as [string, ...string[]]);

/**
 * The fields some error codes add to the envelope (ApiError's `extra` is typed from this, so a
 * field the code adds and the document does not list does not compile).
 */
export const errorExtraSchema = z.strictObject({
  job_id: z.string().optional().describe('policy_denied, dlq_not_retryable: the job concerned; a submit\'s idempotency_in_progress, submit_state_unknown, redis_unavailable, bus_unavailable: the job the submit created or was creating, when known; dlq_retry_in_progress: the new job of the retry'),
  trace_id: z.string().optional().describe('policy_denied: the denied job\'s trace'),
  state: jobState.optional().describe('job_terminal, approval_not_pending: the job\'s state now'),
  retry_after_ms: z.number().int().optional().describe('every 429: the wait in ms (Retry-After has it in whole seconds)'),
  revision: z.number().int().optional().describe('revision_conflict: the stored document\'s revision; send it back to write with compare-and-set'),
  retried_from: z.string().optional().describe('policy_denied and dlq_retry_in_progress of a DLQ retry: the dead-lettered job'),
  job_hash: z.string().optional().describe('stale_request, approval_reheld: the hash of the request as it is now; review it and send it back as job_hash'),
  rule_id: z.string().optional().describe('approval_reheld: the rule that holds the job now; stale_snapshot: the rule the current policy matches'),
  policy_snapshot: z.string().optional().describe('approval_reheld, stale_snapshot: the policy snapshot of the current decision'),
  approved_revision: z.number().int().optional().describe('approval_reheld: the revision of the approval the new hold replaced'),
  decision: z.string().optional().describe('stale_snapshot: what the current policy decides for the job'),
  held_by_rule: z.string().optional().describe('stale_snapshot: the rule that held the job'),
  approval_status: z.enum(['approved', 'rejected']).optional().describe('approval_not_pending: the job\'s latest approval, when it has one'),
  reason_code: z.string().optional().describe('dlq_not_retryable: the DLQ entry\'s reason_code'),
});

export const errorSchema = z
  .strictObject({
    error: z.string(),
    code: z.string(),
    status: z.number().int(),
    details: z.array(z.strictObject({ path: z.string(), message: z.string() })).optional(),
    ...errorExtraSchema.shape,
  })
  .describe('Error envelope (D28); the optional fields after `details` are added by the codes each one names');

export const submitResponseSchema = z.strictObject({
  job_id: z.string(),
  trace_id: z.string(),
  status: z.literal('approval_required').optional(),
  reason: z.string().optional(),
});

const safetySchema = z.strictObject({ decision: z.string(), reason: z.string(), rule_id: z.string(), policy_snapshot: z.string() });

export const approvalSchema = z
  .strictObject({
    status: z.enum(['approved', 'rejected']),
    by: z.string().describe('principal_id of the approver'),
    at: time,
    job_hash: z.string().describe('SHA-256 of the job request the approval is bound to'),
    policy_snapshot: z.string(),
    rule_id: z.string().describe('the rule whose require_approval this approval satisfies (D18)'),
    reason: z.string().optional(),
    revision: z.number().int().describe('1 for the first approval, +1 for each later one'),
    superseded: z.literal(true).optional().describe('the job was held again after this approval (by another rule, or for a changed request): it does not cover the later hold, which needs an approval of its own (P81, P258, P261)'),
  })
  .describe('The latest approval or rejection of the job');

const jobFields = {
  id: z.string(),
  state: jobState,
  topic: z.string(),
  tenant: z.string(),
  trace_id: z.string(),
  priority: z.enum(['interactive', 'batch', 'critical']),
  labels: z.record(z.string(), z.string()),
  attempts: z.number().int(),
  context_ptr: z.string(),
  result_ptr: z.string().nullable(),
  error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
  worker_id: z.string().optional(),
  safety: safetySchema,
  approval: approvalSchema.optional(),
  concurrency: z
    .strictObject({ group: z.string().describe('`<tenant>/<rule id>`'), limit: z.number().int().min(1) })
    .optional()
    .describe('The max_concurrent_jobs group the job counts against (a policy rule allowed it with that constraint). A PENDING job with it is waiting for one of the group\'s slots; a slot is held from the first dispatch to the terminal state.'),
  worker_wait: z
    .strictObject({
      since: time.describe('when this wait for a worker began: the first look that found none since the job was ready (created or approved) or last dispatched'),
      tries: z.number().int().min(1).describe('looks for a worker in this wait; the job fails `no_workers` past SCHEDULER_SCHEDULE_MAX_TRIES of them or SCHEDULER_SCHEDULE_MAX_WAIT after `since`'),
      reason: z
        .enum(['no_worker_for_topic', 'workers_draining', 'no_matching_worker', 'workers_not_listening'])
        .optional()
        .describe('`no_worker_for_topic`: no live worker serves the topic (the job is parked until one does); `workers_draining`: the only workers that serve it are draining; `no_matching_worker`: some that take jobs serve it, but none has the job\'s placement labels or its pool\'s requires; `workers_not_listening`: workers of the topic\'s pools are live, but none names the topic among the job subjects it listens on (WORKER_TOPICS), so none serves it and the job is parked (P253, P261). Absent on a wait recorded by a scheduler older than this field'),
      last_try_at: time.optional().describe('the latest look that found no worker (absent as `reason` is)'),
    })
    .optional()
    .describe('A PENDING or RETRYING job waiting for a worker (D13): the scheduler\'s latest look for one (`last_try_at`) found none. Shown until the job is dispatched, so a job whose next look found a worker busy still shows it; absent on a job that only ever waited because every worker was busy (backpressure, D48)'),
  workflow_id: z.string().optional(),
  run_id: z.string().optional(),
  step_id: z.string().optional(),
  created_at: time,
  updated_at: time,
  dispatched_at: time.optional(),
  finished_at: time.optional(),
  retried_from: z.string().optional().describe('The job whose DLQ entry this one was retried from (POST /api/v1/dlq/{job_id}/retry); its submitters may not approve this one'),
};

export const jobSchema = z.strictObject({ ...jobFields, result: z.unknown().describe('JSON stored at result_ptr; null when absent, not JSON, or nested deeper than 1,000 levels of objects and arrays (the bytes stay at result_ptr)') });
export const jobListItemSchema = z.strictObject(jobFields).describe('A job without `result` (read the job for it)');
export const jobListSchema = z.strictObject({ items: z.array(jobListItemSchema), next_cursor: z.string().nullable() });
export const cancelResponseSchema = z.strictObject({ id: z.string(), state: z.literal('CANCELLED') });

export const decisionSchema = z.strictObject({
  decision: z.string(),
  reason: z.string(),
  rule_id: z.string(),
  policy_snapshot: z.string(),
  state: jobState.describe('the state the decision led to'),
  recorded_at: time,
});
export const decisionsSchema = z.strictObject({ job_id: z.string(), items: z.array(decisionSchema) });

export const dlqItemSchema = z.strictObject({
  job_id: z.string(),
  topic: z.string(),
  reason: z.string(),
  reason_code: z.string(),
  last_state: jobState,
  attempts: z.number().int(),
  created_at: time,
});
export const dlqListSchema = z.strictObject({ items: z.array(dlqItemSchema), next_cursor: z.string().nullable() });
export const dlqRetrySchema = z.strictObject({
  job_id: z.string(),
  retried_from: z.string(),
  status: z.enum(['already_retried', 'approval_required']).optional(),
  state: jobState.optional(),
  reason: z.string().optional(),
});

export const workerSchema = z.strictObject({
  worker_id: z.string(),
  pool: z.string(),
  active_jobs: z.number(),
  max_parallel_jobs: z.number(),
  capabilities: z.array(z.string()),
  labels: z.record(z.string(), z.string()),
  cpu_load: z.number(),
  last_heartbeat: time,
  online: z.boolean(),
});
export const workerListSchema = z.strictObject({ items: z.array(workerSchema) });
export const poolListSchema = z.strictObject({ items: z.array(z.strictObject({ name: z.string(), requires: z.array(z.string()), topics: z.array(z.string()) })) });
export const topicListSchema = z.strictObject({ items: z.array(z.strictObject({ topic: z.string(), pools: z.array(z.string()) })) });

export const configDocumentSchema = z.strictObject({
  scope: z.enum(['system', 'org', 'team', 'workflow', 'step']),
  scope_id: z.string(),
  data: z.record(z.string(), z.unknown()),
  revision: z.number().int(),
  updated_at: time.nullable(),
  meta: z.record(z.string(), z.unknown()),
});
export const configEffectiveSchema = z.strictObject({ data: z.record(z.string(), z.unknown()), revisions: z.record(z.string(), z.number().int()) });
export const configStatusSchema = z.strictObject({
  document: z.strictObject({ scope: z.string(), scope_id: z.string(), revision: z.number().int(), hashes: z.record(z.string(), z.string()) }),
  replicas: z.array(
    z.strictObject({
      service: z.string(),
      instance_id: z.string(),
      revision: z.number().int(),
      hashes: z.record(z.string(), z.string().nullable()),
      status: z.enum(['IN_SYNC', 'DRIFTED', 'NOT_CHECKED']),
      reported_at: time,
    }),
  ),
});
const SCOPE_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
export const configScopeIdSchema = z.string().regex(SCOPE_ID_RE, 'must match ^[A-Za-z0-9._:-]{1,128}$');
export const configScopeSchema = z.enum(SCOPES);
export const configDocQuerySchema = z.object({ scope: configScopeSchema.optional(), scope_id: configScopeIdSchema.optional() });
export const configEffectiveQuerySchema = z.object({
  org: configScopeIdSchema.optional(),
  team: configScopeIdSchema.optional(),
  workflow: configScopeIdSchema.optional(),
  step: configScopeIdSchema.optional(),
});

/**
 * PUT /config document form (D32). Strict: a key it does not have is 400, never dropped. Dropped,
 * `revison` turned a compare-and-set into a plain overwrite, and `Scope`/`Scope_id` turned a
 * team write into a replacement of all of system/default.
 */
export const configDocumentFormSchema = z.strictObject({
  scope: configScopeSchema.nullish().describe('default system'),
  scope_id: configScopeIdSchema.nullish().describe('default `default`'),
  data: z.record(z.string(), z.unknown()).describe('replaces the whole of the document\'s data'),
  revision: z
    .number()
    .int()
    .nonnegative()
    .nullish()
    .describe('compare-and-set: written only if the stored revision equals it (0 = no document yet), else 409 revision_conflict; absent or null = written whatever the revision'),
});
export const configPutBodySchema = z
  .union([
    configDocumentFormSchema,
    z.record(z.string(), z.unknown()).describe('bare object: RFC 7386 merge patch into system/default; every section and field must be known (P66)'),
  ])
  .describe('D32: the document form iff `data` is an object (then only scope, scope_id, data and revision are allowed); otherwise a merge patch');

export const statusSchema = z.strictObject({
  instance_id: z.string(),
  nats: z.strictObject({ connected: z.boolean() }),
  redis: z.strictObject({ ok: z.boolean() }),
  workers: z.strictObject({ total: z.number().int(), online: z.number().int() }).nullable(),
  build: z.strictObject({ version: z.string(), node: z.string(), started_at: time, uptime_s: z.number() }),
});

export const managedKeySchema = z.strictObject({
  id: z.string(),
  tenant: z.string(),
  role: z.enum(['viewer', 'operator', 'admin']),
  principal_id: z.string(),
  name: z.string(),
  created_at: time,
  expires_at: time.nullable(),
  revoked: z.boolean(),
  revoked_at: time.nullable(),
});
export const managedKeyListSchema = z.strictObject({ items: z.array(managedKeySchema) });
export const createdKeySchema = managedKeySchema.extend({ key: z.string().describe('ck_<id>_<secret>; shown once') });

export const healthSchema = z.strictObject({ status: z.literal('ok') });
export const readySchema = z.strictObject({ ready: z.boolean(), checks: z.record(z.string(), z.boolean()) });

export const approvalItemSchema = z.strictObject({
  job: jobListItemSchema,
  decision: z.string().describe('the decision that held the job (require_human)'),
  reason: z.string(),
  rule_id: z.string(),
  policy_snapshot: z.string(),
  job_hash: z.string().describe('send it back as job_hash when approving to bind the approval to what was reviewed'),
});
export const approvalListSchema = z.strictObject({ items: z.array(approvalItemSchema), next_cursor: z.string().nullable() });
export const approvalActionSchema = z.strictObject({
  job_id: z.string(),
  state: jobState,
  status: z.enum(['already_approved', 'already_rejected']).optional().describe('present when an earlier call already did it (idempotent)'),
});

export const policyDecisionSchema = z.strictObject({
  decision: z.enum(['allow', 'deny', 'require_human', 'throttle', 'allow_with_constraints', 'unspecified']),
  reason: z.string(),
  rule_id: z.string().describe('empty when default_decision applied'),
  policy_snapshot: z.string(),
  approval_required: z.boolean(),
  retry_after_ms: z.number().int(),
  constraints: z.strictObject({ max_runtime_ms: z.number().int(), max_retries: z.number().int(), max_artifact_bytes: z.number().int(), max_concurrent_jobs: z.number().int() }).optional(),
  trace: z
    .array(z.strictObject({ rule_id: z.string(), matched: z.boolean(), why: z.string() }))
    .optional()
    .describe('explain and simulate: every rule up to the decision, with why it did or did not match'),
});
export const policySnapshotsSchema = z.strictObject({
  current: z.string(),
  items: z.array(z.strictObject({ id: z.string(), loaded_at: time, rule_count: z.number().int() })).describe('newest first, at most 10'),
});
export const policyRulesSchema = z.strictObject({
  snapshot: z.string(),
  default_decision: z.string(),
  items: z
    .array(z.strictObject({ id: z.string(), decision: z.string(), reason: z.string(), source: z.string().describe('file or bundle:<id>'), spec: z.unknown().describe('match, constraints, velocity, description as loaded') }))
    .describe('in evaluation order (first match wins)'),
});
