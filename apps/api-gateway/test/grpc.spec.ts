// gRPC CordumApi (CONTRACT §2/§4): same auth, tenancy and validation as HTTP,
// the same submit service, and grpc.health.v1.
import { CordumApi, GrpcStatus, Health, ServingStatus, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { KEYS, call, startRig, type Rig } from './harness';

let rig: Rig;
let api: GrpcClient<(typeof CordumApi)['method']>;
let health: GrpcClient<(typeof Health)['method']>;

beforeAll(async () => {
  rig = await startRig();
  const addr = `127.0.0.1:${rig.gateway.grpcPort}`;
  api = grpcClientFor(CordumApi, addr, { defaultDeadlineMs: 10_000 });
  health = grpcClientFor(Health, addr, { defaultDeadlineMs: 5_000 });
});

afterAll(async () => {
  api.close();
  health.close();
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

it('SubmitJob creates the same job as HTTP; GetJobStatus reads it, readable over HTTP too', async () => {
  const res = await api.submitJob({ prompt: 'hi', topic: 'job.echo', contextJson: '{"a":1}', labels: { env: 'dev' } }, { metadata: md(KEYS.operator) });
  expect(res.jobId).toMatch(/^[0-9a-f-]{36}$/);
  expect(res.status).toBe('accepted');
  const st = await api.getJobStatus({ jobId: res.jobId }, { metadata: md(KEYS.viewer) });
  expect(st).toMatchObject({ jobId: res.jobId, state: 'PENDING', topic: 'job.echo' });
  const http = await call(rig.url, 'GET', `/api/v1/jobs/${res.jobId}`, { key: KEYS.viewer });
  expect(http.body).toMatchObject({ id: res.jobId, tenant: 'acme', labels: { env: 'dev' }, priority: 'interactive' });
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
    { prompt: 'x', topic: 'job.echo', labels: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) },
    { prompt: 'x', topic: 'job.echo', deadlineMs: 8n * 24n * 3600n * 1000n },
    { prompt: 'x', topic: 'job.echo', actorType: 'robot' },
  ];
  for (const req of bad) {
    expect(await grpcCode(api.submitJob(req, { metadata: md(KEYS.operator) }))).toEqual({ code: GrpcStatus.INVALID_ARGUMENT, cordum: 'validation_failed' });
  }
});

it('serves grpc.health.v1', async () => {
  expect((await health.check({ service: '' })).status).toBe(ServingStatus.SERVING);
  expect((await health.check({ service: 'cordum.v1.CordumApi' })).status).toBe(ServingStatus.SERVING);
  expect(await grpcCode(health.check({ service: 'nope' }))).toMatchObject({ code: GrpcStatus.NOT_FOUND });
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
});
