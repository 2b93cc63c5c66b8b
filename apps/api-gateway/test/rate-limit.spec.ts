// Distributed rate limiting (D24): one token bucket per tenant shared by all
// replicas, live limits from config `rate_limits`, in-memory fallback when
// Redis is gone. Burst/RPS are kept small so the bound is tight and fast.
import { mkdirSync } from 'node:fs';
import { createConfigStore, publishConfigChanged, sectionHash } from '@cordum/config-overlay';
import { connectBus, type Bus } from '@cordum/bus';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { CordumApi, GrpcStatus, grpcClientFor } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor, type TestServer } from '@cordum/testing';
import { API_KEYS_JSON, KEYS, call, expectEnvelope, metric, type CallResult } from './harness';
import { startReplicas, type Replicas } from './replicas';

const RPS = 5;
const BURST = 20;
const quiet = createLogger({ service: 'test', instance: 't', level: 'error', write: () => undefined });

describe('shared bucket across two gateways', () => {
  let r: Replicas;
  let redis: RedisClient;
  let bus: Bus;

  beforeAll(async () => {
    r = await startReplicas(2, { API_RATE_LIMIT_RPS: String(RPS), API_RATE_LIMIT_BURST: String(BURST), CORDUM_CONFIG_RELOAD_INTERVAL: '30s' });
    redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    bus = await connectBus({ servers: [r.nats.url], name: 'rl-test', logger: quiet });
  });

  afterAll(async () => {
    await bus.close();
    await closeRedis(redis);
    await r.stop();
  });

  it('a burst split over both replicas is held to BURST + RPS×T, not double; 429s carry Retry-After', async () => {
    const n = 4 * BURST;
    const t0 = Date.now();
    const results: CallResult[] = await Promise.all(
      Array.from({ length: n }, (_, i) => call(r.urls[i % 2]!, 'GET', '/api/v1/jobs/none', { key: KEYS.viewer })),
    );
    const seconds = (Date.now() - t0) / 1000;
    // The bound below is for the shared bucket: no replica may have fallen back to memory.
    expect([await metric(r.urls[0]!, 'cordum_rate_limit_fallback_total'), await metric(r.urls[1]!, 'cordum_rate_limit_fallback_total')]).toEqual([0, 0]);
    const accepted = results.filter((x) => x.status === 404).length;
    const limited = results.filter((x) => x.status === 429);
    expect(accepted + limited.length).toBe(n);
    expect(accepted).toBeGreaterThanOrEqual(BURST);
    expect(accepted).toBeLessThanOrEqual(Math.floor(BURST + RPS * seconds));
    expect(accepted).toBeLessThan(2 * BURST); // one budget, not one per replica
    for (const x of limited) {
      expectEnvelope(x, 429, 'rate_limited');
      expect(Number(x.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    // Both replicas rejected some: the budget really is shared.
    const hits = (await metric(r.urls[0]!, 'cordum_rate_limit_hits_total'))! + (await metric(r.urls[1]!, 'cordum_rate_limit_hits_total'))!;
    expect(hits).toBe(limited.length);
    // The bucket lives in one key per tenant, with a TTL.
    expect(await redis.pttl('cordum:rl:{tenant:acme}')).toBeGreaterThan(0);
    // Another tenant has its own bucket.
    expect((await call(r.urls[1]!, 'GET', '/api/v1/jobs/none', { key: KEYS.globex })).status).toBe(404);
    // Probes are never limited.
    expect((await fetch(`${r.urls[0]}/healthz`)).status).toBe(200);
  });

  it('a live rate_limits change applies on both gateways within 5 s and is reported (D33)', async () => {
    const store = createConfigStore(redis);
    const before = await store.get('system', 'default');
    const data = { ...before.data, rate_limits: { rps: 2, burst: 3 } };
    const { revision } = await store.put('system', 'default', data, { expectedRevision: before.revision, validate: true });
    const t0 = Date.now();
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    await waitFor(() => r.gateways.every((g) => g.rateLimits().rps === 2 && g.rateLimits().burst === 3), 5_000, { message: 'both applied' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    // The applied report is written after the new limits take effect, so it may trail them a little.
    const hash = sectionHash(data, 'rate_limits');
    const reported = async (id: string) => (JSON.parse((await redis.get(`cordum:config:applied:api-gateway:${id}`)) ?? '{}') as { hashes?: Record<string, string | null> }).hashes;
    await waitFor(async () => (await reported('gw-1'))?.rate_limits === hash && (await reported('gw-2'))?.rate_limits === hash, 5_000, { message: 'both reported' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    for (const id of ['gw-1', 'gw-2']) expect(await reported(id)).toEqual({ rate_limits: hash });
    // The new burst is what globex now gets: 3 accepted, then 429.
    await redis.del('cordum:rl:{tenant:globex}');
    // Until the first 429: at least the burst, at most the burst plus what 2 rps refilled meanwhile
    // (a fixed five calls allowed one refill, which a loaded machine could exceed).
    const codes: number[] = [];
    const t1 = Date.now();
    for (let i = 0; i < 20 && !codes.includes(429); i++) codes.push((await call(r.urls[i % 2]!, 'GET', '/api/v1/jobs/none', { key: KEYS.globex })).status);
    const refilled = 2 * ((Date.now() - t1) / 1000);
    expect(codes.at(-1)).toBe(429);
    expect(codes.slice(0, -1).every((c) => c === 404)).toBe(true);
    expect(codes.length - 1).toBeGreaterThanOrEqual(3);
    expect(codes.length - 1).toBeLessThanOrEqual(Math.floor(3 + refilled));

    // P68: an admin who set a limit far too low undoes it through the config API, which takes no
    // token from the admin's tenant bucket; every other route stays limited, for the admin too.
    const admin = async (method: string, path: string, body?: unknown) => (await call(r.urls[0]!, method, path, { key: KEYS.admin, ...(body ? { body } : {}) })).status;
    expect(await admin('PUT', '/api/v1/config', { rate_limits: { rps: 0.001, burst: 1 } })).toBe(204);
    await waitFor(() => r.gateways.every((g) => g.rateLimits().rps === 0.001), 5_000, { message: 'the tiny limit applied' });
    await redis.del('cordum:rl:{tenant:acme}');
    expect([await admin('GET', '/api/v1/jobs/none'), await admin('GET', '/api/v1/jobs/none')]).toEqual([404, 429]);
    expect((await call(r.urls[1]!, 'GET', '/api/v1/config', { key: KEYS.viewer })).status).toBe(429);
    // the same routes in another case (P171 matches them; P295: exempt the same)
    expect([await admin('GET', '/API/V1/Config'), await admin('GET', '/api/v1/config'), await admin('GET', '/api/v1/config/status'), await admin('PUT', '/api/v1/config', { rate_limits: { rps: 2, burst: 3 } })]).toEqual([200, 200, 200, 204]);
    await waitFor(() => r.gateways.every((g) => g.rateLimits().rps === 2), 5_000, { message: 'the limit undone' });

    // Removing the section restores the env limits.
    const cur = await store.get('system', 'default');
    const rest = { ...cur.data };
    delete rest['rate_limits'];
    const w = await store.put('system', 'default', rest, { expectedRevision: cur.revision, validate: true });
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision: w.revision });
    await waitFor(() => r.gateways.every((g) => g.rateLimits().rps === RPS && g.rateLimits().burst === BURST), 5_000, { message: 'env limits back' });
  });
});

describe('Redis unreachable', () => {
  let r: Replicas;
  let revived: TestServer | undefined;

  beforeAll(async () => {
    // 1 token/s: the in-memory bucket refills while the burst is in flight, and at 5/s a burst slowed
    // to ~0.6 s by a loaded CI box let 3 extra requests through (17 of 40 limited instead of ≥ 19).
    r = await startReplicas(1, { API_RATE_LIMIT_RPS: '1', API_RATE_LIMIT_BURST: String(BURST) });
  });

  afterAll(async () => {
    await r.stop();
    await revived?.stop();
  });

  it('falls back to an in-memory limiter (metric + one log line) and keeps serving what needs no Redis', async () => {
    const url = r.urls[0]!;
    expect(await metric(url, 'cordum_rate_limit_in_memory')).toBe(0);
    await r.redis.stop();
    // Reads that need Redis fail fast with 503 (never 429 or a hang); probes and metrics still answer.
    const t0 = Date.now();
    const first = await call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.viewer });
    expectEnvelope(first, 503, 'redis_unavailable');
    expect(first.ms).toBeLessThan(3_000);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // The PING behind /readyz is shared for half a second (P268): an answer from before the stop may stand that long.
    await waitFor(async () => (await fetch(`${url}/readyz`)).status === 503, 3_000, { message: '/readyz 503 with Redis stopped' });
    expect(await metric(url, 'cordum_rate_limit_in_memory')).toBe(1);
    // Still limited, now per replica: the burst runs out.
    const results = await Promise.all(Array.from({ length: 2 * BURST }, () => call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.viewer })));
    const limited = results.filter((x) => x.status === 429);
    // at most BURST tokens plus 1/s since the bucket was made (a loaded machine is slow to send 40)
    expect(limited.length).toBeGreaterThanOrEqual(BURST - Math.ceil((Date.now() - t0) / 1000));
    expect(limited.length).toBeGreaterThan(0);
    for (const x of limited) expect(Number(x.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(results.every((x) => x.status === 429 || x.status === 503)).toBe(true);
    const switches = r.logs.filter((l) => l.includes('rate limiter falling back to per-replica in-memory buckets'));
    expect(switches).toHaveLength(1);
    expect(await metric(url, 'cordum_rate_limit_fallback_total')).toBe(1);
  });

  it('clears the gauge once Redis is back even when no request comes (P181)', async () => {
    const url = r.urls[0]!;
    expect(await metric(url, 'cordum_rate_limit_in_memory')).toBe(1);
    mkdirSync(r.redis.dir, { recursive: true }); // the first test's stop() removed it
    revived = await r.redis.restart();
    // Only scrapes from here on: no request goes through the limiter.
    await waitFor(async () => (await metric(url, 'cordum_rate_limit_in_memory')) === 0, 15_000, { message: 'gauge back to 0 without requests' });
    expect(r.logs.filter((l) => l.includes('rate limiter back on shared redis buckets'))).toHaveLength(1);
  });
});

describe('REDIS_RATE_LIMIT=false', () => {
  let r: Replicas;
  beforeAll(async () => {
    r = await startReplicas(1, { REDIS_RATE_LIMIT: 'false', API_RATE_LIMIT_RPS: '1', API_RATE_LIMIT_BURST: '2' });
  });
  afterAll(async () => {
    await r.stop();
  });

  it('limits in memory from the start and says so in its log; the fallback gauge (an alert: Redis unreachable) stays 0', async () => {
    expect(await metric(r.urls[0]!, 'cordum_rate_limit_in_memory')).toBe(0);
    expect(r.logs.some((l) => l.includes('REDIS_RATE_LIMIT=false'))).toBe(true);
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await call(r.urls[0]!, 'GET', '/api/v1/jobs/none', { key: KEYS.viewer })).status);
    expect(codes.slice(0, 2)).toEqual([404, 404]);
    expect(codes).toContain(429);
  });
});

describe('requests refused for their role or tenant (P172)', () => {
  let r: Replicas;

  beforeAll(async () => {
    r = await startReplicas(1, { API_RATE_LIMIT_RPS: '0.01', API_RATE_LIMIT_BURST: '3' });
  });

  afterAll(async () => {
    await r.stop();
  });

  it('count against the tenant of the key like any authenticated request: a key looping on 403 is limited', async () => {
    const url = r.urls[0]!;
    // a viewer cannot submit: 403, each one charged to acme
    for (let i = 0; i < 2; i++) expectEnvelope(await call(url, 'POST', '/api/v1/jobs', { key: KEYS.viewer, body: { prompt: 'x', topic: 'job.echo' } }), 403, 'forbidden');
    // another tenant named by a key bound to acme: 403, charged to acme too
    expectEnvelope(await call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.viewer, tenant: 'globex' }), 403, 'tenant_mismatch');
    // the burst of 3 is spent: the next refusal and an allowed call of the tenant are 429
    expectEnvelope(await call(url, 'POST', '/api/v1/jobs', { key: KEYS.viewer, body: { prompt: 'x', topic: 'job.echo' } }), 429, 'rate_limited');
    expectEnvelope(await call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.operator }), 429, 'rate_limited');
    // another tenant's bucket is untouched
    expect((await call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.globex })).status).toBe(404);
    // a key that does not authenticate is 401, never charged to a tenant
    expectEnvelope(await call(url, 'GET', '/api/v1/jobs/none', { key: 'nope-nope-nope' }), 401, 'unauthenticated');
  });

});

const STAR_ADMIN = 'star-admin-key-00001';

describe('a `*` key naming its tenant in the body (P270)', () => {
  let r: Replicas;

  beforeAll(async () => {
    r = await startReplicas(1, { API_RATE_LIMIT_RPS: '0.01', API_RATE_LIMIT_BURST: '10', CORDUM_API_KEYS: JSON.stringify([...(JSON.parse(API_KEYS_JSON) as unknown[]), { key: STAR_ADMIN, tenant: '*', role: 'admin', principal_id: 'root' }]) });
  });

  afterAll(async () => {
    await r.stop();
  });

  it('a `*` key that names its tenant only in the body is charged to that tenant too (P270), on HTTP and gRPC', async () => {
    const url = r.urls[0]!;
    // acme's burst is spent (RPS 0.01: no token comes back during the test); the `*` key's address
    // bucket has room for every call below, so a 429 is acme's
    await waitFor(async () => (await call(url, 'GET', '/api/v1/jobs/none', { key: KEYS.operator })).status === 429, 5_000, { intervalMs: 1, message: "acme's bucket spent" });
    const submitAs = (tenant: string) => call(url, 'POST', '/api/v1/jobs', { key: KEYS.star, body: { prompt: 'x', topic: 'job.echo', tenant_id: tenant } });
    // before P270 this was charged to the client address only, and the job was created in acme
    expectEnvelope(await submitAs('acme'), 429, 'rate_limited');
    expectEnvelope(await call(url, 'POST', '/api/v1/policy/evaluate', { key: KEYS.star, body: { topic: 'job.echo', tenant_id: 'acme' } }), 429, 'rate_limited');
    // a cancel and a DLQ retry are charged before the job or entry is looked up (404 before they were charged)
    expectEnvelope(await call(url, 'POST', '/api/v1/jobs/00000000-0000-4000-8000-000000000000/cancel', { key: KEYS.star, body: { tenant_id: 'acme' } }), 429, 'rate_limited');
    expectEnvelope(await call(url, 'POST', '/api/v1/dlq/00000000-0000-4000-8000-000000000000/retry', { key: KEYS.star, body: { tenant_id: 'acme' } }), 429, 'rate_limited');
    // P295: so is a key minted for it by a `*` admin key
    expectEnvelope(await call(url, 'POST', '/api/v1/auth/keys', { key: STAR_ADMIN, body: { role: 'viewer', tenant_id: 'acme' } }), 429, 'rate_limited');
    // a tenant with budget left is served
    expect((await submitAs('initech')).status).toBe(200);
    const api = grpcClientFor(CordumApi, `127.0.0.1:${r.gateways[0]!.grpcPort}`, { defaultDeadlineMs: 5_000 });
    try {
      const failed = await api.submitJob({ prompt: 'x', topic: 'job.echo', tenantId: 'acme' }, { metadata: { 'x-api-key': KEYS.star } }).then(() => null, (err: unknown) => err as { code: number });
      expect(failed?.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    } finally {
      api.close();
    }
  });
});
