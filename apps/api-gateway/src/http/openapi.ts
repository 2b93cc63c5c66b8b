// The OpenAPI 3.1 description of every gateway route, generated from the zod
// schemas in api-schemas.ts (and the submit body schema), served at
// GET /api/v1/openapi.json and committed as docs/openapi.json (a test fails
// when that file differs from buildOpenApi()).
import { z } from 'zod';
import { IDEMPOTENCY_KEY_RE, submitBodySchema } from '../submit/schema';
import { TENANT_RE } from '../auth/keys';
import { policyRequestSchema, simulateRequestSchema } from '../routes/policy';
import { approveBodySchema, approvalsQuerySchema, rejectBodySchema } from '../routes/approvals';
import { cancelBodySchema, listQuerySchema } from '../routes/job-actions';
import { dlqQuerySchema, retryBodySchema } from '../routes/dlq';
import { workersQuerySchema } from '../routes/workers';
import { createKeySchema } from '../routes/keys';
import * as s from './api-schemas';
import { ERROR_CODES } from './errors';
import { ROUTE_ROLES } from '../auth/routes';

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface Operation {
  method: Method;
  /** Express template (`/api/v1/jobs/:id`). */
  path: string;
  summary: string;
  tag: string;
  /** null = no authentication. */
  auth: boolean;
  query?: z.ZodObject;
  /** Request headers besides auth and X-Tenant-ID (which every authenticated route takes). */
  headers?: { name: string; description: string; pattern?: string }[];
  body?: z.ZodType;
  /** Default true; cancel and retry take an optional body. */
  bodyRequired?: boolean;
  /** status → schema (undefined = no body); error statuses use the envelope. */
  ok: Record<number, { description: string; schema?: z.ZodType; contentType?: string; headers?: Record<string, string> }>;
  errors: number[];
}

const id = z.string().max(128);

const AUTH_ERRORS = [400, 401, 403, 429, 503];
/**
 * Possible on every route, whatever its handler: a request without Host (400), a method the path
 * does not take (405, with Allow), Expect other than 100-continue (417), too slow (408), headers
 * too large (431), and a body over the limit announced with `Expect: 100-continue` (413, refused
 * before routing, P295); the last four are answered by the HTTP server itself
 * (http/client-errors.ts). buildOpenApi adds them to each operation's errors.
 */
export const EVERY_ROUTE_ERRORS = [400, 405, 408, 413, 417, 431];
const ETAG = { ETag: 'the document\'s revision, quoted ("7"); send it back as `revision` to write with compare-and-set' };

export const OPERATIONS: Operation[] = [
  { method: 'GET', path: '/healthz', summary: 'Liveness (no auth)', tag: 'probes', auth: false, ok: { 200: { description: 'alive', schema: s.healthSchema } }, errors: [] },
  { method: 'GET', path: '/readyz', summary: 'Readiness: Redis, NATS, JetStream, config (no auth)', tag: 'probes', auth: false, ok: { 200: { description: 'ready', schema: s.readySchema }, 503: { description: 'not ready: the same body, `ready: false` and the failing checks false (not the error envelope)', schema: s.readySchema } }, errors: [] },
  { method: 'GET', path: '/metrics', summary: 'Prometheus metrics (no auth)', tag: 'probes', auth: false, ok: { 200: { description: 'text exposition format', contentType: 'text/plain' } }, errors: [] },
  { method: 'GET', path: '/api/v1/openapi.json', summary: 'This document (no auth)', tag: 'meta', auth: false, ok: { 200: { description: 'OpenAPI 3.1', schema: z.record(z.string(), z.unknown()) } }, errors: [] },

  {
    method: 'POST',
    path: '/api/v1/jobs',
    summary: 'Submit a job (idempotent with Idempotency-Key). Without a key a resend is a new job: after a 5xx or a timeout read the job (503 submit_state_unknown carries its job_id: it may have been accepted and then runs) before resending, or send keys (P335)',
    tag: 'jobs',
    auth: true,
    headers: [{ name: 'Idempotency-Key', description: 'same as body idempotency_key (both given: they must be equal, else 400 idempotency_key_mismatch); one job per tenant and key for the job TTL (D25), counted from the submit and renewed while the job is held or live (P246)', pattern: IDEMPOTENCY_KEY_RE.source }],
    body: submitBodySchema,
    ok: { 200: { description: 'accepted, or held for approval', schema: s.submitResponseSchema } },
    errors: [...AUTH_ERRORS, 409, 413, 415],
  },
  {
    method: 'GET',
    path: '/api/v1/jobs',
    summary: 'List the tenant\'s jobs, newest first, cursor-paginated over job:index:{tenant}:<state|all>. With `topic`, the filter is applied while paging: at most 2000 index entries are examined per request, so a page may hold fewer than `limit` items (even none) while next_cursor is set; follow next_cursor until it is null.',
    tag: 'jobs',
    auth: true,
    query: listQuerySchema,
    ok: { 200: { description: 'one page', schema: s.jobListSchema } },
    errors: AUTH_ERRORS,
  },
  { method: 'GET', path: '/api/v1/jobs/:id', summary: 'Read a job (with result)', tag: 'jobs', auth: true, ok: { 200: { description: 'the job', schema: s.jobSchema } }, errors: [...AUTH_ERRORS, 404] },
  { method: 'POST', path: '/api/v1/jobs/:id/cancel', summary: 'Cancel a job (D5: job lock ≤ 2 s, else 409 job_busy; terminal → 409 job_terminal; a CANCELLED job is answered 409 and its JobCancel is sent to the worker again, P52; a JobCancel the gateway could not publish is sent by the schedulers once NATS is back, P134, and one a running attempt has not answered is sent again, about 10, 20, 40 … s on, for up to 10 minutes, P135)', tag: 'jobs', auth: true, body: cancelBodySchema, bodyRequired: false, ok: { 200: { description: 'cancelled', schema: s.cancelResponseSchema } }, errors: [...AUTH_ERRORS, 404, 409, 413, 415] },
  { method: 'GET', path: '/api/v1/jobs/:id/decisions', summary: 'Safety decisions recorded for the job, oldest first: its admission, a hold and its approval, and the Check before each retry (a retry the policy stops ends FAILED policy_denied or approval_required)', tag: 'jobs', auth: true, ok: { 200: { description: 'decision history', schema: s.decisionsSchema } }, errors: [...AUTH_ERRORS, 404] },

  {
    method: 'GET',
    path: '/api/v1/approvals',
    summary: 'Jobs of the tenant waiting for approval (APPROVAL_REQUIRED), newest first, cursor-paginated; each with the decision that held it and the job_hash an approval binds to',
    tag: 'approvals',
    auth: true,
    query: approvalsQuerySchema,
    ok: { 200: { description: 'one page', schema: s.approvalListSchema } },
    errors: AUTH_ERRORS,
  },
  {
    method: 'POST',
    path: '/api/v1/approvals/:job_id/approve',
    summary:
      'Approve a held job: APPROVAL_REQUIRED → PENDING and republished (exactly one dispatch under concurrent approvals on any replicas). 403 self_approval_denied for the submitter; 409 stale_request when the request changed since the hold (or differs from job_hash), stale_snapshot when the current policy no longer holds it by the same rule (D18) or it is held by another rule than the rule_id sent, approval_reheld when it was held again after an earlier approval and the call does not name the job_hash and rule_id of this hold (P81), approval_not_pending / job_terminal otherwise; a repeated approval is 200 with status already_approved',
    tag: 'approvals',
    auth: true,
    body: approveBodySchema,
    bodyRequired: false,
    ok: { 200: { description: 'approved (or already approved)', schema: s.approvalActionSchema } },
    errors: [...AUTH_ERRORS, 404, 409, 413, 415],
  },
  {
    method: 'POST',
    path: '/api/v1/approvals/:job_id/reject',
    summary: 'Reject a held job: it ends DENIED (error approval_rejected) with a DLQ entry; a repeated rejection is 200 with status already_rejected',
    tag: 'approvals',
    auth: true,
    body: rejectBodySchema,
    bodyRequired: false,
    ok: { 200: { description: 'rejected (or already rejected)', schema: s.approvalActionSchema } },
    errors: [...AUTH_ERRORS, 404, 409, 413, 415],
  },

  { method: 'POST', path: '/api/v1/policy/evaluate', summary: 'Safety kernel Evaluate for a job-shaped request in the acting tenant (velocity windows are read, never counted)', tag: 'policy', auth: true, body: policyRequestSchema, ok: { 200: { description: 'the decision', schema: s.policyDecisionSchema } }, errors: [...AUTH_ERRORS, 413, 415] },
  { method: 'POST', path: '/api/v1/policy/explain', summary: 'Like evaluate, plus `trace`: which rule matched and why each earlier rule did not', tag: 'policy', auth: true, body: policyRequestSchema, ok: { 200: { description: 'the decision with its trace', schema: s.policyDecisionSchema } }, errors: [...AUTH_ERRORS, 413, 415] },
  { method: 'POST', path: '/api/v1/policy/simulate', summary: 'Evaluate a candidate policy (`policy_yaml`, a complete policy file) against the request without activating it; an invalid candidate is 400 invalid_policy with the load error', tag: 'policy', auth: true, body: simulateRequestSchema, ok: { 200: { description: 'the candidate\'s decision with its trace', schema: s.policyDecisionSchema } }, errors: [...AUTH_ERRORS, 413, 415] },
  { method: 'GET', path: '/api/v1/policy/snapshots', summary: 'The active policy snapshot and the last 10 (newest first)', tag: 'policy', auth: true, ok: { 200: { description: 'snapshots', schema: s.policySnapshotsSchema } }, errors: AUTH_ERRORS },
  { method: 'GET', path: '/api/v1/policy/rules', summary: 'The active (effective) policy: file rules then bundle rules, in evaluation order', tag: 'policy', auth: true, ok: { 200: { description: 'rules', schema: s.policyRulesSchema } }, errors: AUTH_ERRORS },

  { method: 'GET', path: '/api/v1/dlq', summary: 'Dead letters of the tenant, newest first, cursor-paginated; each is kept DLQ_TTL (30 days by default)', tag: 'dlq', auth: true, query: dlqQuerySchema, ok: { 200: { description: 'one page', schema: s.dlqListSchema } }, errors: AUTH_ERRORS },
  { method: 'POST', path: '/api/v1/dlq/:job_id/retry', summary: 'Retry a dead letter: exactly one new job per entry; later retries return it with status already_retried (and no state once its record has expired)', tag: 'dlq', auth: true, body: retryBodySchema, bodyRequired: false, ok: { 200: { description: 'the new (or already created) job', schema: s.dlqRetrySchema } }, errors: [...AUTH_ERRORS, 404, 409, 413, 415] },
  { method: 'DELETE', path: '/api/v1/dlq/:job_id', summary: 'Delete a dead letter (admin)', tag: 'dlq', auth: true, ok: { 204: { description: 'deleted for good; the dead job keeps its record for JOB_TTL from its end, not DLQ_TTL (P250)' } }, errors: [...AUTH_ERRORS, 404] },
  // 503 state_unknown (from AUTH_ERRORS' 503 list): the delete may have been applied; a repeat answers 404 if it was (P335).

  { method: 'GET', path: '/api/v1/workers', summary: 'Workers from the scheduler snapshot (online only unless include_offline=true)', tag: 'workers', auth: true, query: workersQuerySchema, ok: { 200: { description: 'workers', schema: s.workerListSchema } }, errors: AUTH_ERRORS },
  { method: 'GET', path: '/api/v1/workers/:id', summary: 'One worker (online or not)', tag: 'workers', auth: true, ok: { 200: { description: 'the worker', schema: s.workerSchema } }, errors: [...AUTH_ERRORS, 404] },
  { method: 'GET', path: '/api/v1/pools', summary: 'Pools as applied (config section `pools`)', tag: 'workers', auth: true, ok: { 200: { description: 'pools', schema: s.poolListSchema } }, errors: [...AUTH_ERRORS, 500] },
  { method: 'GET', path: '/api/v1/topics', summary: 'Topic routing as applied (config section `pools`)', tag: 'workers', auth: true, ok: { 200: { description: 'topics', schema: s.topicListSchema } }, errors: [...AUTH_ERRORS, 500] },

  { method: 'GET', path: '/api/v1/config', summary: 'A whole config document (default system/default); ETag = revision', tag: 'config', auth: true, query: s.configDocQuerySchema, headers: [{ name: 'If-None-Match', description: 'the ETag of a document already read ("7"): 304 while it is still the current revision (P295)' }], ok: { 200: { description: 'the document', schema: s.configDocumentSchema, headers: ETAG }, 304: { description: 'not modified: If-None-Match names the current revision; no body', headers: ETAG } }, errors: [...AUTH_ERRORS, 500] },
  { method: 'PUT', path: '/api/v1/config', summary: 'Write config (D32): document form replaces data (CAS with revision), bare object = merge patch into system/default. Admin keys of TENANT_ID or `*` only: an admin bound to another tenant is 403 forbidden (P320)', tag: 'config', auth: true, body: s.configPutBodySchema,
    headers: [{ name: 'If-Match', description: '"<revision>" as in the ETag: compare-and-set for either form, like a body revision (409 revision_conflict on mismatch); * sets none; any other form, or a revision other than the body\'s, is 400', pattern: '^("[0-9]{1,15}"|\\*)$' }], ok: { 204: { description: 'written; sys.config.changed published. A 503 state_unknown write may have been applied: GET the document (its revision) before resending; a resend on the same If-Match answers 409 if it was (P335)', headers: ETAG } }, errors: [...AUTH_ERRORS, 409, 413, 415, 500] },
  { method: 'GET', path: '/api/v1/config/effective', summary: 'Effective config: system/default overlaid with the named lower scopes (D34)', tag: 'config', auth: true, query: s.configEffectiveQuerySchema, ok: { 200: { description: 'merged data and the revisions used', schema: s.configEffectiveSchema } }, errors: [...AUTH_ERRORS, 500] },
  { method: 'GET', path: '/api/v1/config/status', summary: 'Section hashes and per-replica drift (admin, D33)', tag: 'config', auth: true, ok: { 200: { description: 'status', schema: s.configStatusSchema } }, errors: [...AUTH_ERRORS, 500] },
  { method: 'GET', path: '/api/v1/status', summary: 'Instance status (admin; no secrets)', tag: 'meta', auth: true, ok: { 200: { description: 'status', schema: s.statusSchema } }, errors: AUTH_ERRORS },

  { method: 'GET', path: '/api/v1/auth/keys', summary: 'Managed API keys of the tenant (admin); an expired or revoked key is listed for 30 days after it stopped working', tag: 'auth', auth: true, ok: { 200: { description: 'keys (never secrets)', schema: s.managedKeyListSchema } }, errors: AUTH_ERRORS },
  { method: 'POST', path: '/api/v1/auth/keys', summary: 'Create a managed key; the secret is returned once (admin)', tag: 'auth', auth: true, body: createKeySchema, ok: { 201: { description: 'created', schema: s.createdKeySchema } }, errors: [...AUTH_ERRORS, 413, 415] },
  { method: 'DELETE', path: '/api/v1/auth/keys/:id', summary: 'Revoke a managed key (admin); effective on every replica within 1 s; its record is deleted 30 days later', tag: 'auth', auth: true, ok: { 200: { description: 'the revoked key', schema: s.managedKeySchema } }, errors: [...AUTH_ERRORS, 404] },
  {
    method: 'GET',
    path: '/api/v1/stream',
    summary: 'WebSocket event stream of the tenant (auth by headers or subprotocol `cordum-api-key, <base64url key>`): frames hello, job.state, job.progress, alert, workflow.event, and gap {reason bus_reconnected|events_dropped|broadcast_lost, since?, at} where events may be missing (re-read state); at most once; a plain GET is 426',
    tag: 'stream',
    auth: true,
    ok: { 101: { description: 'switching protocols; a hello {type: hello, tenant}, then JSON events {type: job.state|job.progress|workflow.event|alert, tenant, ...}; clients send nothing (a message closes with 1003, a frame over 1 KiB with 1009); 4008 for a client that stops reading, 4401 for a revoked or expired key, 1001 when the gateway stops' } },
    errors: [...AUTH_ERRORS, 426],
  },
];

export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z_]+)/g, '{$1}');
}

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  delete out['$schema'];
  return out;
}

function responseSchema(schema: z.ZodType): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'output', unrepresentable: 'any' }) as Record<string, unknown>;
  delete out['$schema'];
  return out;
}

function errorCodesFor(status: number): string[] {
  return Object.entries(ERROR_CODES)
    .filter(([, v]) => v.status === status)
    .map(([k]) => k);
}

/** An error response's description: the codes with its status (a list of several is every code with that status, not only this route's). */
function errorDescription(status: number): string {
  const codes = errorCodesFor(status);
  return codes.length === 1 ? `error; code ${codes[0] ?? ''}` : `error; code one of the codes with status ${status} (not every one applies to every route): ${codes.join(', ')}`;
}

export function buildOpenApi(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of OPERATIONS) {
    const p = openApiPath(op.path);
    const params: Record<string, unknown>[] = [];
    for (const m of op.path.matchAll(/:([A-Za-z_]+)/g)) params.push({ name: m[1], in: 'path', required: true, schema: jsonSchema(id) });
    if (op.query) {
      for (const [name, q] of Object.entries(op.query.shape)) {
        const qs = q as z.ZodType;
        params.push({ name, in: 'query', required: !qs.safeParse(undefined).success, schema: jsonSchema(qs) });
      }
    }
    if (op.auth) params.push({ name: 'X-Tenant-ID', in: 'header', required: false, description: 'the tenant to act in; defaults to the key\'s tenant. A key bound to a tenant: any other value is 403 tenant_mismatch. A * key must name one (here or as body tenant_id).', schema: { type: 'string', pattern: TENANT_RE.source } });
    for (const h of op.headers ?? []) params.push({ name: h.name, in: 'header', required: false, description: h.description, schema: { type: 'string', ...(h.pattern ? { pattern: h.pattern } : {}) } });
    const responses: Record<string, unknown> = {};
    for (const [status, r] of Object.entries(op.ok)) {
      const res: Record<string, unknown> = r.schema
        ? { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: responseSchema(r.schema) } } }
        : r.contentType
          ? { description: r.description, content: { [r.contentType]: { schema: { type: 'string' } } } }
          : { description: r.description };
      if (r.headers) res['headers'] = Object.fromEntries(Object.entries(r.headers).map(([name, description]) => [name, { description, schema: { type: 'string' } }]));
      responses[status] = res;
    }
    for (const st of [...new Set([...op.errors, ...EVERY_ROUTE_ERRORS])].sort()) {
      const error: Record<string, unknown> = { description: errorDescription(st), content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      // Every 429 code (rate_limited, policy_throttled, too_many_streams) sends Retry-After (CONTRACT §2).
      if (st === 429) error['headers'] = { 'Retry-After': { description: 'whole seconds to wait before retrying (≥ 1); the body has retry_after_ms', schema: { type: 'integer', minimum: 1 } } };
      if (st === 405) error['headers'] = { Allow: { description: 'the methods the path takes (HEAD wherever GET), e.g. "GET, HEAD, POST"', schema: { type: 'string' } } };
      responses[String(st)] = error;
    }
    const route = `${op.method} ${op.path}`;
    const role = (ROUTE_ROLES as Record<string, string>)[route];
    const entry: Record<string, unknown> = {
      operationId: `${op.method.toLowerCase()}${op.path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      summary: op.summary,
      tags: [op.tag],
      security: op.auth ? [{ apiKey: [] }, { bearer: [] }] : [],
      responses,
    };
    if (role) entry['x-cordum-role'] = role;
    if (op.query) entry['description'] = 'A query parameter not listed here is 400 validation_failed, one detail naming it (decisions.md P210): a misspelt filter is refused, not dropped; so is one given twice.';
    if (params.length > 0) entry['parameters'] = params;
    if (op.body) entry['requestBody'] = { required: op.bodyRequired ?? true, content: { 'application/json': { schema: jsonSchema(op.body) } } };
    (paths[p] ??= {})[op.method.toLowerCase()] = entry;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Cordum API gateway',
      version: '1.0.0',
      description:
        'Every /api/v1 route except openapi.json needs X-API-Key (or Authorization: Bearer) and takes an optional X-Tenant-ID (defaults to the key\'s tenant). Errors are always the JSON envelope {error, code, status, details?}. A documented path asked with a method it does not list (OPTIONS included; HEAD is served wherever GET is) is 405 method_not_allowed with an Allow header naming its methods; CONNECT is 405 with an empty Allow. Roles: admin ⊃ operator ⊃ viewer (x-cordum-role).',
    },
    components: {
      securitySchemes: {
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        bearer: { type: 'http', scheme: 'bearer' },
      },
      schemas: { Error: responseSchema(s.errorSchema) },
    },
    paths,
  };
}

/** Every authenticated operation's route id; tests compare it with the role table. */
export function documentedRouteIds(): string[] {
  return OPERATIONS.filter((o) => o.auth).map((o) => `${o.method} ${o.path}`);
}
