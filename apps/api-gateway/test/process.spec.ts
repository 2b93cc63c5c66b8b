// The built bundle as operators run it: `node dist/apps/api-gateway/main.js`
// from any directory, configured by env alone (CONTRACT §1). Needs `npx nx build api-gateway`.
import { tmpdir } from 'node:os';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { spawnService, startNats, startRedis, waitFor, freePort, type ManagedProcess, type TestServer } from '@cordum/testing';

let redis: TestServer;
let nats: TestServer;
let client: RedisClient;
const procs: ManagedProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  nats = await startNats();
  client = createRedis({ url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop(5_000)));
  await closeRedis(client);
  await nats.stop();
  await redis.stop();
});

function spawnGateway(env: Record<string, string>): ManagedProcess {
  const p = spawnService('api-gateway', env, { cwd: tmpdir() });
  procs.push(p);
  return p;
}

it('a bad env var exits 2 with one stderr line naming it', async () => {
  const p = spawnGateway({ CORDUM_API_KEY: 'admin-key-12345678', CORDUM_API_KEYS: 'not-json', REDIS_URL: redis.url, NATS_URL: nats.url });
  const exit = await p.waitExit(15_000);
  expect(exit.code).toBe(2);
  expect(p.output).toHaveLength(1);
  expect(p.output[0]).toMatch(/^invalid config: CORDUM_API_KEYS /);
});

it('no keys at all exits 2 (D26)', async () => {
  const p = spawnGateway({ REDIS_URL: redis.url, NATS_URL: nats.url });
  const exit = await p.waitExit(15_000);
  expect(exit.code).toBe(2);
  expect(p.output.join('\n')).toMatch(/CORDUM_API_KEY/);
});

/** A gateway that serves on free ports, with no safety kernel listening. */
async function servingEnv(): Promise<{ env: Record<string, string>; http: number; metrics: number }> {
  const [http, metrics, grpc, kernel] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = {
    CORDUM_API_KEY: 'admin-key-12345678',
    REDIS_URL: redis.url,
    NATS_URL: nats.url,
    GATEWAY_HTTP_ADDR: `127.0.0.1:${http}`,
    GATEWAY_METRICS_ADDR: `127.0.0.1:${metrics}`,
    GATEWAY_GRPC_ADDR: `127.0.0.1:${grpc}`,
    SAFETY_KERNEL_ADDR: `127.0.0.1:${kernel}`,
  };
  return { env, http, metrics };
}

it('serves from any cwd, on IPv6 and IPv4 with the manifests\' ":port" addresses, and exits 0 within 15 s on SIGTERM', async () => {
  const { env, http, metrics } = await servingEnv();
  // P240: ":port" binds every address; an IPv6-only cluster reaches the API and /metrics
  const p = spawnGateway({ ...env, GATEWAY_HTTP_ADDR: `:${http}`, GATEWAY_METRICS_ADDR: `:${metrics}` });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${http}/readyz`).catch(() => null))?.status === 200, 20_000, { message: 'gateway ready' });
  // Kernel down: the job is still accepted (D19).
  const r = await fetch(`http://127.0.0.1:${http}/api/v1/jobs`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': 'admin-key-12345678' },
    body: JSON.stringify({ prompt: 'hi', topic: 'job.echo' }),
  });
  expect(r.status).toBe(200);
  const scraped = await fetch(`http://127.0.0.1:${metrics}/metrics`);
  expect(scraped.status).toBe(200);
  // P241: the clock offset measured against Redis at start (same host: about 0)
  const offset = Number(/^cordum_clock_offset_seconds\{[^}]*\} (\S+)$/m.exec(await scraped.text())?.[1]);
  expect(Math.abs(offset)).toBeLessThan(0.25);
  expect((await fetch(`http://[::1]:${http}/readyz`)).status).toBe(200);
  expect((await fetch(`http://[::1]:${metrics}/metrics`)).status).toBe(200);
  expect(p.hasLine('maxmemory-policy')).toBe(false); // noeviction: nothing to warn about
  const t0 = Date.now();
  p.kill('SIGTERM');
  const exit = await p.waitExit(15_000);
  expect(exit.code).toBe(0);
  expect(Date.now() - t0).toBeLessThan(15_000);
});

it('the elected gateway trims job index entries older than its JOB_TTL at once (D16, D45)', async () => {
  const now = Date.now();
  await client.zadd('job:index:{proc-ret}:all', String(now - 5 * 60_000), 'expired-job', String(now), 'live-job');
  // An index written before the registry existed (P89): the first retention pass finds it by its one scan.
  await client.del('job:index:keys:scanned');
  spawnGateway({ ...(await servingEnv()).env, JOB_TTL: '1m' });
  await waitFor(async () => (await client.zscore('job:index:{proc-ret}:all', 'expired-job')) === null, 20_000, { message: 'expired entry trimmed' });
  expect(await client.zrange('job:index:{proc-ret}:all', '0', '-1')).toEqual(['live-job']);
});

it('warns at start, naming the policy, when Redis may evict keys', async () => {
  await client.config('SET', 'maxmemory-policy', 'allkeys-lru');
  try {
    const { env, http } = await servingEnv();
    const p = spawnGateway(env);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${http}/readyz`).catch(() => null))?.status === 200, 20_000, { message: 'gateway ready' });
    expect(p.output.filter((l) => l.includes('set maxmemory-policy noeviction') && l.includes('allkeys-lru'))).toHaveLength(1);
  } finally {
    await client.config('SET', 'maxmemory-policy', 'noeviction');
  }
});

it('NATS down at start is waited out, as Redis down is: one warning, then ready once NATS listens, without a restart', async () => {
  const late = await startNats();
  await late.process.stop(5_000); // its port and store stay; restart() brings it back there
  const { env, http } = await servingEnv();
  const p = spawnGateway({ ...env, NATS_URL: late.url });
  let revived: TestServer | undefined;
  try {
    await waitFor(() => p.hasLine('bus: NATS not reachable at start, waiting for it'), 15_000, { message: 'waiting for NATS' });
    expect(p.running).toBe(true);
    revived = await late.restart();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${http}/readyz`).catch(() => null))?.status === 200, 20_000, { message: 'ready once NATS is up' });
    const waiting = p.output.filter((l) => l.includes('NATS not reachable at start'));
    expect(waiting).toHaveLength(1);
    // with the cause a plain dial gets, so a mistyped host is not mistaken for an outage
    expect(waiting[0]).toContain('ECONNREFUSED');
  } finally {
    await p.stop(5_000);
    await (revived ?? late).stop();
  }
});
