// gRPC CordumApi (CONTRACT §2/§4): same auth, tenancy and validation as HTTP,
// the same submit service, and grpc.health.v1.
import * as grpc from '@grpc/grpc-js';
import { CordumApi, GrpcStatus, Health, ServingStatus, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { jobKeys } from '@cordum/job-store';
import { KEYS, call, rigClients, startRig, type Rig } from './harness';
import { createLogger } from '@cordum/service-kit';
import { toGrpcError } from '../src/grpc/api';
import { ApiError } from '../src/http/errors';
import { SubmitError } from '../src/submit/errors';

let rig: Rig;
let api: GrpcClient<(typeof CordumApi)['method']>;
let health: GrpcClient<(typeof Health)['method']>;
let raw: grpc.Client;

beforeAll(async () => {
  rig = await startRig();
  const addr = `127.0.0.1:${rig.gateway.grpcPort}`;
  api = grpcClientFor(CordumApi, addr, { defaultDeadlineMs: 10_000 });
  health = grpcClientFor(Health, addr, { defaultDeadlineMs: 5_000 });
  raw = new grpc.Client(addr, grpc.credentials.createInsecure());
});

afterAll(async () => {
  api.close();
  health.close();
  raw.close();
  await rig.stop();
});

const md = (key?: string, tenant?: string): Record<string, string> => ({ ...(key ? { 'x-api-key': key } : {}), ...(tenant ? { 'x-tenant-id': tenant } : {}) });

async function grpcCode(p: Promise<unknown>): Promise<{ code: number; cordum: string | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code: number; metadata?: { get(k: string): unknown[] } };
    return { code: e.code, cordum: e.metadata?.get('cordum-error-code')[0] as string | undefined };
  }
  throw new Error('call succeeded');
}

/** The error a call failed with: its code, message and trailing metadata. */
async function grpcFailure(p: Promise<unknown>): Promise<{ code: number; details: string; metadata: grpc.Metadata }> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('call succeeded');
}

/** A unary call with raw request bytes (a 5 s deadline); resolves with the error, or OK. */
function rawUnary(path: string, bytes: Buffer, md: Record<string, string> = {}): Promise<{ code: number; details: string; metadata: grpc.Metadata }> {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) metadata.set(k, v);
  return new Promise((resolve) => {
    raw.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, bytes, metadata, { deadline: Date.now() + 5_000 }, (err) =>
      resolve(err ?? { code: GrpcStatus.OK, details: '', metadata: new grpc.Metadata() }),
    );
  });
}

/** Protobuf length-delimited field `field` holding `bytes`. */
function lenField(field: number, bytes: Buffer | string): Buffer {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'utf8');
  const len: number[] = [];
  for (let n = b.length; ; n >>>= 7) {
    if (n < 0x80) {
      len.push(n);
      break;
    }
    len.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), b]);
}

/** grpc-js sends a status message percent-encoded (encodeURI) in the grpc-message trailer. */
const encodedBytes = (details: string): number => encodeURI(details).length;

it('SubmitJob creates the same job as HTTP; GetJobStatus reads it, readable over HTTP too', async () => {
  const res = await api.submitJob({ prompt: 'hi', topic: 'job.echo', contextJson: '{"a":1}', labels: { env: 'dev' } }, { metadata: md(KEYS.operator) });
  expect(res.jobId).toMatch(/^[0-9a-f-]{36}$/);
  expect(res.status).toBe('accepted');
  const st = await api.getJobStatus({ jobId: res.jobId }, { metadata: md(KEYS.viewer) });
  expect(st).toMatchObject({ jobId: res.jobId, state: 'PENDING', topic: 'job.echo' });
  const http = await call(rig.url, 'GET', `/api/v1/jobs/${res.jobId}`, { key: KEYS.viewer });
  expect(http.body).toMatchObject({ id: res.jobId, tenant: 'acme', labels: { env: 'dev' }, priority: 'interactive' });
});

it('GetJobStatus carries a result above gRPC clients\' default 4 MiB receive limit to a client that raised it (README "gRPC")', async () => {
  // Results may be up to the worker's maxResultBytes (8 MiB by default): the gateway sets no send
  // limit, and the README tells clients to raise their receive limit.
  const res = await api.submitJob({ prompt: 'big', topic: 'job.echo' }, { metadata: md(KEYS.operator) });
  const c = await rigClients(rig, 'grpc-big-result');
  const big = grpcClientFor(CordumApi, `127.0.0.1:${rig.gateway.grpcPort}`, { defaultDeadlineMs: 10_000, channelOptions: { 'grpc.max_receive_message_length': 16 * 1024 * 1024 } });
  try {
    const lease = await c.locks.tryAcquire({ key: jobKeys.lock(res.jobId), ttlMs: 10_000, owner: 'spec', fenceKey: jobKeys.fence(res.jobId) });
    const token = lease!.token;
    const text = 'x'.repeat(6 * 1024 * 1024);
    await c.redis.set(jobKeys.res(res.jobId), JSON.stringify({ text }));
    for (const [state, patch] of [['SCHEDULED', {}], ['DISPATCHED', { attempts: 1 }], ['SUCCEEDED', { resultPtr: jobKeys.resPtr(res.jobId), workerId: 'w-1' }]] as const) {
      expect((await c.store.transition(res.jobId, state, { token, patch })).ok).toBe(true);
    }
    await lease!.release();
    const st = await big.getJobStatus({ jobId: res.jobId }, { metadata: md(KEYS.viewer) });
    expect(st.state).toBe('SUCCEEDED');
    expect(st.resultJson.length).toBeGreaterThan(6 * 1024 * 1024);
    expect((JSON.parse(st.resultJson) as { text: string }).text).toBe(text);
  } finally {
    big.close();
    await c.close();
  }
});

it('idempotency key: a replay returns the first job', async () => {
  const a = await api.submitJob({ prompt: 'x', topic: 'job.echo', idempotencyKey: 'grpc-idem-1' }, { metadata: md(KEYS.operator) });
  const b = await api.submitJob({ prompt: 'x', topic: 'job.echo', idempotencyKey: 'grpc-idem-1' }, { metadata: md(KEYS.operator) });
  expect(b.jobId).toBe(a.jobId);
});

it('policy outcomes: hold → approval_required; deny → PERMISSION_DENIED with job id', async () => {
  const hold = await api.submitJob({ prompt: 'x', topic: 'job.hold.deploy' }, { metadata: md(KEYS.operator) });
  expect(hold.status).toBe('approval_required');
  expect(hold.reason).toBe('production changes need a human');
  try {
    await api.submitJob({ prompt: 'x', topic: 'job.deny.all' }, { metadata: md(KEYS.operator) });
    throw new Error('should fail');
  } catch (err) {
    const e = err as { code: number; metadata: { get(k: string): unknown[] } };
    expect(e.code).toBe(GrpcStatus.PERMISSION_DENIED);
    expect(e.metadata.get('cordum-error-code')[0]).toBe('policy_denied');
    expect(String(e.metadata.get('cordum-job-id')[0])).toMatch(/^[0-9a-f-]{36}$/);
  }
});

it('auth errors: UNAUTHENTICATED without/with a bad key; PERMISSION_DENIED for role and tenant', async () => {
  expect(await grpcCode(api.submitJob({ prompt: 'x', topic: 'job.echo' }, { metadata: md() }))).toEqual({ code: GrpcStatus.UNAUTHENTICATED, cordum: 'unauthenticated' });
  expect(await grpcCode(api.getJobStatus({ jobId: 'x' }, { metadata: md('not-a-key-at-all') }))).toEqual({ code: GrpcStatus.UNAUTHENTICATED, cordum: 'unauthenticated' });
  expect(await grpcCode(api.submitJob({ prompt: 'x', topic: 'job.echo' }, { metadata: md(KEYS.viewer) }))).toEqual({ code: GrpcStatus.PERMISSION_DENIED, cordum: 'forbidden' });
  expect(await grpcCode(api.submitJob({ prompt: 'x', topic: 'job.echo' }, { metadata: md(KEYS.operator, 'globex') }))).toEqual({ code: GrpcStatus.PERMISSION_DENIED, cordum: 'tenant_mismatch' });
  expect(await grpcCode(api.submitJob({ prompt: 'x', topic: 'job.echo', tenantId: 'globex' }, { metadata: md(KEYS.operator) }))).toEqual({ code: GrpcStatus.PERMISSION_DENIED, cordum: 'tenant_mismatch' });
});

it('tenancy: another tenant\'s job is NOT_FOUND, exactly like a missing one', async () => {
  const res = await api.submitJob({ prompt: 'hi', topic: 'job.echo' }, { metadata: md(KEYS.operator) });
  expect(await grpcCode(api.getJobStatus({ jobId: res.jobId }, { metadata: md(KEYS.globex) }))).toEqual({ code: GrpcStatus.NOT_FOUND, cordum: 'job_not_found' });
  expect(await grpcCode(api.getJobStatus({ jobId: 'no-such-job' }, { metadata: md(KEYS.operator) }))).toEqual({ code: GrpcStatus.NOT_FOUND, cordum: 'job_not_found' });
});

it('validation errors are INVALID_ARGUMENT with the same rules as HTTP', async () => {
  const bad = [
    { prompt: 'x', topic: 'echo' },
    { prompt: 'x', topic: 'jobx.echo' },
    { prompt: 'x'.repeat(50_001), topic: 'job.echo' },
    { prompt: 'x', topic: 'job.echo', priority: 'urgent' },
    { prompt: 'x', topic: 'job.echo', contextJson: '{nope' },
    // Parses, but nests past MAX_JSON_DEPTH (JSON.stringify of it would throw RangeError).
    { prompt: 'x', topic: 'job.echo', contextJson: '['.repeat(100_000) + ']'.repeat(100_000) },
    // P215: a number JSON cannot hold would reach the worker as null.
    { prompt: 'x', topic: 'job.echo', contextJson: '{"a":[1,-1e999]}' },
    { prompt: 'x', topic: 'job.echo', contextJson: '1e999' },
    { prompt: 'x', topic: 'job.echo', labels: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) },
    { prompt: 'x', topic: 'job.echo', deadlineMs: 8n * 24n * 3600n * 1000n },
    { prompt: 'x', topic: 'job.echo', actorType: 'robot' },
  ];
  for (const req of bad) {
    expect(await grpcCode(api.submitJob(req, { metadata: md(KEYS.operator) }))).toEqual({ code: GrpcStatus.INVALID_ARGUMENT, cordum: 'validation_failed' });
  }
});

// P335: UNAVAILABLE means "not applied" to gRPC clients, whose retry policies resend it.
it('maps a submit whose outcome is unknown to UNKNOWN with its job id, and only unapplied faults to UNAVAILABLE', () => {
  const quiet = createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined });
  const unknown = toGrpcError(new SubmitError('submit_state_unknown', 'the create\'s answer did not come', { jobId: 'j-1' }), quiet);
  expect({ code: unknown.code, cordum: unknown.metadata.get('cordum-error-code')[0], job: unknown.metadata.get('cordum-job-id')[0] }).toEqual({ code: GrpcStatus.UNKNOWN, cordum: 'submit_state_unknown', job: 'j-1' });
  for (const code of ['redis_unavailable', 'bus_unavailable'] as const) expect(toGrpcError(new ApiError(code), quiet).code).toBe(GrpcStatus.UNAVAILABLE);
});

it('serves grpc.health.v1', async () => {
  expect((await health.check({ service: '' })).status).toBe(ServingStatus.SERVING);
  expect((await health.check({ service: 'cordum.v1.CordumApi' })).status).toBe(ServingStatus.SERVING);
  expect(await grpcCode(health.check({ service: 'nope' }))).toMatchObject({ code: GrpcStatus.NOT_FOUND });
});

describe('an IPv6 GATEWAY_GRPC_ADDR (P198)', () => {
  let v6: Rig | undefined;
  afterAll(async () => {
    await v6?.stop();
  });

  it('binds [::1]:port (the bracketed form the config accepts) and serves on it', async () => {
    v6 = await startRig({ GATEWAY_GRPC_ADDR: '[::1]:0' });
    const c = grpcClientFor(Health, `[::1]:${v6.gateway.grpcPort}`, { defaultDeadlineMs: 5_000 });
    try {
      expect((await c.check({ service: '' })).status).toBe(ServingStatus.SERVING);
    } finally {
      c.close();
    }
  });
});

describe('rate limit by client address (a key without a tenant)', () => {
  let limited: Rig;
  beforeAll(async () => {
    limited = await startRig({ API_RATE_LIMIT_RPS: '0.2', API_RATE_LIMIT_BURST: '2' });
  });
  afterAll(async () => {
    await limited.stop();
  });

  it('charges one budget per client IP, not one per connection (the peer port differs)', async () => {
    const addr = `127.0.0.1:${limited.gateway.grpcPort}`;
    // a local subchannel pool: each client dials its own connection, from its own port
    const clients = Array.from({ length: 4 }, () => grpcClientFor(CordumApi, addr, { defaultDeadlineMs: 5_000, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
    try {
      const codes = [];
      for (const c of clients) codes.push((await grpcCode(c.getJobStatus({ jobId: 'nope' }, { metadata: md(KEYS.star) }))).code);
      // burst 2: the first two are answered (a malformed id), the others exhausted; per connection all four would pass
      expect(codes.slice(0, 2)).toEqual([GrpcStatus.INVALID_ARGUMENT, GrpcStatus.INVALID_ARGUMENT]);
      expect(codes.slice(2)).toEqual([GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus.RESOURCE_EXHAUSTED]);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it('a call refused for its role still counts against the tenant of its key (P172)', async () => {
    const c = grpcClientFor(CordumApi, `127.0.0.1:${limited.gateway.grpcPort}`, { defaultDeadlineMs: 5_000 });
    try {
      const submit = () => grpcCode(c.submitJob({ prompt: 'x', topic: 'job.echo' }, { metadata: md(KEYS.viewer) }));
      // burst 2: two refusals spend it; the third call, and the same key's allowed call, are exhausted
      expect([(await submit()).code, (await submit()).code, (await submit()).code]).toEqual([GrpcStatus.PERMISSION_DENIED, GrpcStatus.PERMISSION_DENIED, GrpcStatus.RESOURCE_EXHAUSTED]);
      expect((await grpcCode(c.getJobStatus({ jobId: 'nope' }, { metadata: md(KEYS.viewer) }))).code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    } finally {
      c.close();
    }
  });
});

describe('a status stays small enough to send, whatever the input (the message names caller label keys)', () => {
  const op = { metadata: md(KEYS.operator), deadlineMs: 5_000 };

  it('a label key of 80,000 characters: INVALID_ARGUMENT at once, its path cut, the message within 4 KiB', async () => {
    const started = Date.now();
    const e = await grpcFailure(api.submitJob({ prompt: 'x', topic: 'job.echo', labels: { ['k'.repeat(80_000)]: 'v' } }, op));
    // Before the bound the status (an 80 KB grpc-message) was never sent: DEADLINE_EXCEEDED here.
    expect(e.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(e.metadata.get('cordum-error-code')).toEqual(['validation_failed']);
    // the path (`labels.<key>`) cut to 128 characters
    expect(e.details).toBe(`request validation failed (labels.${'k'.repeat(121)}…: Invalid key in record)`);
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it('400 labels of 256-character keys and 4 KiB values: ten details, the rest counted; the trailers stay small', async () => {
    const labels = Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`key${String(i).padStart(253, '0')}`, 'v'.repeat(4097)]));
    const e = await grpcFailure(api.submitJob({ prompt: 'x', topic: 'job.echo', labels }, op));
    expect(e.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(e.details.split('; ')).toHaveLength(11);
    expect(e.details).toMatch(/; …\(\+\d+ more\)\)$/);
    expect(encodedBytes(e.details)).toBeLessThanOrEqual(4096);
    expect(Object.entries(e.metadata.getMap()).filter(([, v]) => v.length > 256)).toEqual([]);
    // the channel is not left with stuck calls: a valid one goes through
    expect((await api.submitJob({ prompt: 'fine', topic: 'job.echo' }, op)).status).toBe('accepted');
  });

  it('30 labels with 303-character CJK keys (9 encoded bytes a character): cut to 4 KiB encoded', async () => {
    const labels = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [String(i).padStart(3, '0') + '中'.repeat(300), 'v']));
    const e = await grpcFailure(api.submitJob({ prompt: 'x', topic: 'job.echo', labels }, op));
    expect(e.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(e.details).toMatch(/…$/);
    expect(encodedBytes(e.details)).toBeLessThanOrEqual(4096);
  });

  it('a health check naming a 40,000-character service (240 KB percent-encoded): NOT_FOUND at once, the name cut', async () => {
    const e = await grpcFailure(health.check({ service: 'é'.repeat(40_000) }, { deadlineMs: 5_000 }));
    expect(e.code).toBe(GrpcStatus.NOT_FOUND);
    expect(e.details).toBe(`unknown service "${'é'.repeat(128)}…"`);
  });
});

it('a __proto__ label is refused INVALID_ARGUMENT by name, as HTTP refuses it, not dropped', async () => {
  // labels (field 5) {"__proto__": "x", "team": "a"}, hand-encoded: a JS object literal cannot carry the key
  const entry = (k: string, v: string): Buffer => lenField(5, Buffer.concat([lenField(1, k), lenField(2, v)]));
  const bytes = Buffer.concat([lenField(1, 'p'), lenField(2, 'job.echo'), entry('__proto__', 'x'), entry('team', 'a')]);
  const e = await rawUnary('/cordum.v1.CordumApi/SubmitJob', bytes, md(KEYS.operator));
  expect(e.code).toBe(GrpcStatus.INVALID_ARGUMENT);
  expect(e.metadata.get('cordum-error-code')).toEqual(['validation_failed']);
  expect(e.details).toBe('request validation failed (labels.__proto__: key __proto__ is not allowed)');
  const http = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: '{"prompt":"p","topic":"job.echo","labels":{"__proto__":"x","team":"a"}}' });
  expect(http.status).toBe(400);
  expect(http.body['details']).toEqual([{ path: 'labels.__proto__', message: 'key __proto__ is not allowed' }]);
});

it('grpc.health.v1: a request that does not decode is INVALID_ARGUMENT (Check and Watch), not INTERNAL', async () => {
  // field 1 (service) says 0x7f bytes follow; none do. And invalid UTF-8 in the service name.
  for (const bytes of [Buffer.from([0x0a, 0x7f]), Buffer.from([0x0a, 0x02, 0xed, 0xa0])]) {
    const e = await rawUnary('/grpc.health.v1.Health/Check', bytes);
    expect({ code: e.code, details: e.details }).toEqual({ code: GrpcStatus.INVALID_ARGUMENT, details: expect.stringMatching(/^request is not a valid grpc\.health\.v1\.HealthCheckRequest message: /) as string });
  }
  const watch = await new Promise<grpc.StatusObject>((resolve) => {
    const s = raw.makeServerStreamRequest('/grpc.health.v1.Health/Watch', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0x7f]), new grpc.Metadata(), { deadline: Date.now() + 5_000 });
    s.on('data', () => undefined);
    s.on('error', () => undefined);
    s.on('status', resolve);
  });
  expect(watch.code).toBe(GrpcStatus.INVALID_ARGUMENT);
});

it('takes the key from authorization: Bearer as HTTP does; a non-empty x-api-key wins', async () => {
  const job = await api.submitJob({ prompt: 'hi', topic: 'job.echo' }, { metadata: { authorization: `Bearer ${KEYS.operator}` } });
  expect(job.status).toBe('accepted');
  const path = `/api/v1/jobs/${job.jobId}`;
  const cases: { metadata: Record<string, string>; ok: boolean }[] = [
    { metadata: { authorization: `bearer   ${KEYS.viewer}` }, ok: true },
    { metadata: { 'x-api-key': KEYS.viewer, authorization: 'Bearer not-a-key-at-all' }, ok: true },
    { metadata: { 'x-api-key': 'not-a-key-at-all', authorization: `Bearer ${KEYS.viewer}` }, ok: false },
    { metadata: { authorization: `Basic ${KEYS.viewer}` }, ok: false },
    { metadata: { authorization: KEYS.viewer }, ok: false },
  ];
  for (const c of cases) {
    const viaHttp = await call(rig.url, 'GET', path, { headers: c.metadata });
    expect({ ...c, http: viaHttp.status }).toEqual({ ...c, http: c.ok ? 200 : 401 });
    if (c.ok) expect((await api.getJobStatus({ jobId: job.jobId }, { metadata: c.metadata })).jobId).toBe(job.jobId);
    else expect(await grpcCode(api.getJobStatus({ jobId: job.jobId }, { metadata: c.metadata }))).toEqual({ code: GrpcStatus.UNAUTHENTICATED, cordum: 'unauthenticated' });
  }
});
