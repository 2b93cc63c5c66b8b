// The OpenAPI document: committed copy == generated, served without auth,
// and in two-way agreement with the routes the express app really registers
// and with the role table.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ROUTE_ROLES } from '../src/auth/routes';
import { OPERATIONS, buildOpenApi, openApiPath } from '../src/http/openapi';
import * as S from '../src/http/api-schemas';
import { errorSchema } from '../src/http/api-schemas';
import { approveBodySchema, approvalsQuerySchema, rejectBodySchema } from '../src/routes/approvals';
import { dlqQuerySchema, retryBodySchema } from '../src/routes/dlq';
import { cancelBodySchema, listQuerySchema } from '../src/routes/job-actions';
import { createKeySchema } from '../src/routes/keys';
import { workersQuerySchema } from '../src/routes/workers';
import { jobKeys } from '@cordum/job-store';
import { KEYS, call, rigClients, startRig, type CallResult, type Rig, type RigClients } from './harness';

const DOC_PATH = resolve(__dirname, '../../../docs/openapi.json');
const generated = `${JSON.stringify(buildOpenApi(), null, 2)}\n`;

let rig: Rig;
let clients: RigClients;
beforeAll(async () => {
  rig = await startRig();
  clients = await rigClients(rig, 'openapi-spec');
});
afterAll(async () => {
  await clients?.close();
  await rig.stop();
});

interface Layer {
  route?: { path: unknown; methods: Record<string, boolean> };
}

function registeredRoutes(): Set<string> {
  const app = rig.gateway.httpApp as unknown as { router: { stack: Layer[] } } | null;
  if (!app) throw new Error('gateway app not started');
  const out = new Set<string>();
  for (const layer of app.router.stack) {
    if (!layer.route || typeof layer.route.path !== 'string') continue;
    for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== '_all') out.add(`${m.toUpperCase()} ${layer.route.path}`);
  }
  return out;
}

describe('OpenAPI document', () => {
  it('docs/openapi.json is the generated document (CORDUM_WRITE_OPENAPI=1 rewrites it)', () => {
    if (process.env['CORDUM_WRITE_OPENAPI'] === '1') writeFileSync(DOC_PATH, generated);
    expect(readFileSync(DOC_PATH, 'utf8')).toBe(generated);
  });

  it('every 429 response declares the Retry-After header the gateway sends', () => {
    const paths = buildOpenApi()['paths'] as Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown> }> }>>;
    let seen = 0;
    for (const ops of Object.values(paths)) {
      for (const op of Object.values(ops)) {
        const r = op.responses['429'];
        if (!r) continue;
        seen++;
        expect(r.headers?.['Retry-After']).toEqual(expect.objectContaining({ schema: { type: 'integer', minimum: 1 } }));
      }
    }
    expect(seen).toBeGreaterThanOrEqual(25);
  });

  it('declares the request headers the gateway reads and the ETag it sends, and they work as documented', async () => {
    type Op = { security: unknown[]; parameters?: { name: string; in: string; schema: { pattern?: string } }[]; responses: Record<string, { headers?: Record<string, unknown> }> };
    const paths = buildOpenApi()['paths'] as Record<string, Record<string, Op>>;
    const headerParams = (op: Op) => (op.parameters ?? []).filter((p) => p.in === 'header').map((p) => p.name);
    for (const ops of Object.values(paths)) {
      for (const op of Object.values(ops)) expect(headerParams(op).includes('X-Tenant-ID')).toBe(op.security.length > 0);
    }
    const submit = paths['/api/v1/jobs']!['post']!;
    expect(headerParams(submit)).toEqual(['X-Tenant-ID', 'Idempotency-Key']);
    const pattern = new RegExp(submit.parameters!.find((p) => p.name === 'Idempotency-Key')!.schema.pattern!);
    const body = { prompt: 'p', topic: 'job.echo' };
    const first = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body, headers: { 'Idempotency-Key': 'openapi-header-1' } });
    const again = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body, headers: { 'Idempotency-Key': 'openapi-header-1' } });
    expect(pattern.test('openapi-header-1')).toBe(true);
    expect(first.status).toBe(200);
    expect(again.body['job_id']).toBe(first.body['job_id']);
    expect(pattern.test('has space')).toBe(false);
    expect((await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body, headers: { 'Idempotency-Key': 'has space' } })).status).toBe(400);
    expect(paths['/api/v1/config']!['get']!.responses['200']!.headers?.['ETag']).toBeDefined();
    expect(paths['/api/v1/config']!['put']!.responses['204']!.headers?.['ETag']).toBeDefined();
    const cfg = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin });
    expect(cfg.headers.get('etag')).toBe(`"${String(cfg.body['revision'])}"`);
  });

  it('request bodies are the schemas the routes parse with, so the document allows what they accept and no more (P170)', () => {
    const body = (method: string, path: string) => OPERATIONS.find((o) => o.method === method && o.path === path)?.body;
    expect(body('POST', '/api/v1/approvals/:job_id/approve')).toBe(approveBodySchema);
    expect(body('POST', '/api/v1/approvals/:job_id/reject')).toBe(rejectBodySchema);
    expect(body('POST', '/api/v1/jobs/:id/cancel')).toBe(cancelBodySchema);
    expect(body('POST', '/api/v1/dlq/:job_id/retry')).toBe(retryBodySchema);
    expect(body('POST', '/api/v1/auth/keys')).toBe(createKeySchema);
    // what the separate copies let through, the document now refuses
    const text = JSON.stringify(buildOpenApi()['paths']);
    expect(text).toContain('^[0-9a-f]{64}$');
    expect(text).toContain('"maximum":315360000');
  });

  it('query parameters are the schemas the lists parse with (P297: hand-written copies said less)', () => {
    const query = (path: string) => OPERATIONS.find((o) => o.method === 'GET' && o.path === path)?.query;
    expect(query('/api/v1/jobs')).toBe(listQuerySchema);
    expect(query('/api/v1/approvals')).toBe(approvalsQuerySchema);
    expect(query('/api/v1/dlq')).toBe(dlqQuerySchema);
    expect(query('/api/v1/workers')).toBe(workersQuerySchema);
    const params = (buildOpenApi() as { paths: Record<string, { get?: { parameters?: { name: string; schema: Record<string, unknown> }[] } }> }).paths['/api/v1/jobs']?.get?.parameters ?? [];
    expect(params.find((p) => p.name === 'topic')?.schema).toMatchObject({ maxLength: 255, pattern: '^job(\\.[A-Za-z0-9_-]+)+$' });
    expect(params.find((p) => p.name === 'limit')?.schema).toMatchObject({ pattern: '^\\d{1,4}$' });
    expect(params.find((p) => p.name === 'cursor')?.schema).toMatchObject({ maxLength: 512 });
  });

  it('states the limits a refine enforces (labels ≤ 50) and offers no null body the parser refuses', async () => {
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> } }>> };
    const body = (path: string, method = 'post') => doc.paths[path]?.[method]?.requestBody?.content['application/json']?.schema as { properties?: Record<string, Record<string, unknown>>; anyOf?: unknown[]; type?: string };
    for (const path of ['/api/v1/jobs', '/api/v1/policy/evaluate', '/api/v1/policy/explain', '/api/v1/policy/simulate']) {
      // labels may be null (absent): the object branch carries the limit.
      expect(body(path).properties?.['labels']?.['anyOf']).toContainEqual(expect.objectContaining({ type: 'object', maxProperties: 50 }));
    }
    // An optional body is absent or an object: a JSON null is refused (400 (body)), so none is offered.
    for (const path of ['/api/v1/jobs/{id}/cancel', '/api/v1/approvals/{job_id}/approve', '/api/v1/approvals/{job_id}/reject', '/api/v1/dlq/{job_id}/retry']) {
      expect(body(path)).toMatchObject({ type: 'object' });
      expect(body(path).anyOf).toBeUndefined();
    }
    const r = await fetch(`${rig.url}/api/v1/dlq/nope/retry`, { method: 'POST', headers: { 'X-API-Key': KEYS.operator, 'Content-Type': 'application/json' }, body: 'null' });
    expect(r.status).toBe(400);
  });

  it('is served at /api/v1/openapi.json without a key', async () => {
    const r = await call(rig.url, 'GET', '/api/v1/openapi.json');
    expect(r.status).toBe(200);
    expect(r.body).toEqual(JSON.parse(generated));
    expect(r.body['openapi']).toBe('3.1.0');
  });

  it('every registered route is documented and every documented route is registered', () => {
    const registered = registeredRoutes();
    const documented = new Set(OPERATIONS.map((o) => `${o.method} ${o.path}`));
    expect([...registered].filter((r) => !documented.has(r)).sort()).toEqual([]);
    expect([...documented].filter((r) => !registered.has(r)).sort()).toEqual([]);
    expect(registered.size).toBeGreaterThanOrEqual(25);
  });

  it('every authenticated operation is in the role table with its role, and the reverse', () => {
    const authed = OPERATIONS.filter((o) => o.auth).map((o) => `${o.method} ${o.path}`).sort();
    expect(authed).toEqual(Object.keys(ROUTE_ROLES).sort());
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { 'x-cordum-role'?: string; security: unknown[] }>> };
    for (const [route, role] of Object.entries(ROUTE_ROLES)) {
      const [m, p] = route.split(' ') as [string, string];
      const op = doc.paths[openApiPath(p)]?.[m.toLowerCase()];
      expect({ route, role: op?.['x-cordum-role'] }).toEqual({ route, role });
      expect(op?.security.length).toBeGreaterThan(0);
    }
  });

  it('documented error responses follow the envelope, and a real 401 matches it', async () => {
    const r = await call(rig.url, 'GET', '/api/v1/jobs');
    expect(r.status).toBe(401);
    expect(errorSchema.safeParse(r.body).success).toBe(true);
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    for (const op of OPERATIONS.filter((o) => o.auth)) {
      const responses = doc.paths[openApiPath(op.path)]?.[op.method.toLowerCase()]?.responses ?? {};
      expect({ op: op.path, has401: '401' in responses }).toEqual({ op: op.path, has401: true });
    }
  });

  it('real responses of the remaining routes match their documented schemas', async () => {
    const check = (schema: { safeParse(v: unknown): { success: boolean; error?: unknown } }, r: CallResult, status: number) => {
      expect(r.status).toBe(status);
      const p = schema.safeParse(r.body);
      expect({ ok: p.success, body: r.body, issues: p.error }).toMatchObject({ ok: true });
    };
    const sub = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.echo' } });
    check(S.submitResponseSchema, sub, 200);
    check(S.submitResponseSchema, await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.hold.x' } }), 200);
    check(S.jobSchema, await call(rig.url, 'GET', `/api/v1/jobs/${String(sub.body['job_id'])}`, { key: KEYS.viewer }), 200);
    // P230: a job waiting for a worker (recorded as the scheduler records it) in the read and the list.
    const waitingId = String(sub.body['job_id']);
    const since = Date.now() + 60_000;
    await clients.redis.hset(jobKeys.meta(waitingId), 'workerWait', JSON.stringify({ since, tries: 2, reason: 'workers_draining', lastTryAt: since + 1_000 }));
    const waiting = await call(rig.url, 'GET', `/api/v1/jobs/${waitingId}`, { key: KEYS.viewer });
    check(S.jobSchema, waiting, 200);
    expect(waiting.body['worker_wait']).toEqual({ since: new Date(since).toISOString(), tries: 2, reason: 'workers_draining', last_try_at: new Date(since + 1_000).toISOString() });
    const list = await call(rig.url, 'GET', '/api/v1/jobs?state=PENDING', { key: KEYS.viewer });
    check(S.jobListSchema, list, 200);
    expect((list.body['items'] as Array<Record<string, unknown>>).find((j) => j['id'] === waitingId)?.['worker_wait']).toMatchObject({ reason: 'workers_draining' });
    const created = await call(rig.url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'viewer', name: 'doc', ttl_seconds: 3600 } });
    check(S.createdKeySchema, created, 201);
    check(S.managedKeyListSchema, await call(rig.url, 'GET', '/api/v1/auth/keys', { key: KEYS.admin }), 200);
    check(S.managedKeySchema, await call(rig.url, 'DELETE', `/api/v1/auth/keys/${String(created.body['id'])}`, { key: KEYS.admin }), 200);
    check(S.healthSchema, await call(rig.url, 'GET', '/healthz'), 200);
    check(S.readySchema, await call(rig.url, 'GET', '/readyz'), 200);
    for (const r of [await call(rig.url, 'GET', '/api/v1/stream', { key: KEYS.viewer }), await call(rig.url, 'GET', '/api/v1/nope', { key: KEYS.viewer })]) check(errorSchema, r, r.status);
  });
});

describe('errors possible on every route (P96)', () => {
  it('every operation documents 400, 405 (with Allow), 408, 417 and 431 with their codes', () => {
    const doc = buildOpenApi() as { info: { description: string }; paths: Record<string, Record<string, { responses: Record<string, { description: string; content?: unknown; headers?: Record<string, unknown> }> }>> };
    let seen = 0;
    for (const op of OPERATIONS) {
      const responses = doc.paths[openApiPath(op.path)]?.[op.method.toLowerCase()]?.responses ?? {};
      const got = Object.fromEntries(['400', '405', '408', '417', '431'].map((st) => [st, responses[st]?.description ?? null]));
      expect({ op: `${op.method} ${op.path}`, got }).toEqual({
        op: `${op.method} ${op.path}`,
        got: {
          '400': expect.stringContaining('bad_request'),
          '405': 'error; code method_not_allowed',
          '408': 'error; code request_timeout',
          '417': 'error; code expectation_failed',
          '431': 'error; code headers_too_large',
        },
      });
      expect(responses['408']?.content).toEqual({ 'application/json': { schema: { $ref: '#/components/schemas/Error' } } });
      expect(responses['405']?.headers?.['Allow']).toEqual(expect.objectContaining({ schema: { type: 'string' } }));
      // a list of several codes says it is every code with the status, not this route's own
      expect(responses['400']?.description).toMatch(/^error; code one of the codes with status 400 \(not every one applies to every route\): /);
      seen++;
    }
    expect(seen).toBeGreaterThanOrEqual(30);
    expect(doc.info.description).toContain('405 method_not_allowed with an Allow header');
  });

  it('/readyz documents its 503 as the readiness body, not the error envelope (what it answers, faults.spec)', () => {
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>> };
    const responses = doc.paths['/readyz']?.['get']?.responses ?? {};
    expect(responses['503']?.content?.['application/json']?.schema).toEqual(responses['200']?.content?.['application/json']?.schema);
    expect(responses['503']?.content?.['application/json']?.schema).toMatchObject({ required: ['ready', 'checks'] });
  });

  it('the Error schema lists, with a description, every field an error code adds (approval conflicts carry what a client must resend)', () => {
    const props = (buildOpenApi() as { components: { schemas: { Error: { properties: Record<string, { description?: string }>; additionalProperties?: unknown } } } }).components.schemas.Error;
    for (const f of ['job_id', 'trace_id', 'state', 'retry_after_ms', 'revision', 'retried_from', 'job_hash', 'rule_id', 'policy_snapshot', 'approved_revision', 'decision', 'held_by_rule', 'approval_status', 'reason_code']) {
      expect({ f, description: props.properties[f]?.description }).toEqual({ f, description: expect.stringMatching(/\w+: /) });
    }
    // strict: a field not listed fails the response checks of the specs (errorSchema)
    expect(props.additionalProperties).toBe(false);
    expect(errorSchema.safeParse({ error: 'x', code: 'stale_request', status: 409, job_hash: 'h' }).success).toBe(true);
    expect(errorSchema.safeParse({ error: 'x', code: 'stale_request', status: 409, undocumented: 1 }).success).toBe(false);
  });
});
