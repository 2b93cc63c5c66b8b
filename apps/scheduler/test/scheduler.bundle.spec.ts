import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { freePort, serviceBundle, spawnService, startNats, startRedis, waitFor, type ManagedProcess, type TestServer } from '@cordum/testing';

// The built bundle (run `npx nx build scheduler` first) starts from any cwd,
// finds its bundled config/ (D37), becomes ready, and stops on SIGTERM with
// exit 0, leaving no Redis connection behind.
describe('scheduler bundle', () => {
  let redisServer: TestServer;
  let natsServer: TestServer;
  let redis: RedisClient;
  let proc: ManagedProcess | undefined;

  beforeAll(async () => {
    [redisServer, natsServer] = await Promise.all([startRedis(), startNats()]);
    redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  });
  afterAll(async () => {
    await proc?.stop();
    await closeRedis(redis);
    await Promise.all([redisServer.stop(), natsServer.stop()]);
  });

  const clients = async () => Number(/connected_clients:(\d+)/.exec(await redis.info('clients'))?.[1]);

  it('starts from another cwd with the bundled config, is ready, and stops cleanly', async () => {
    const bundle = serviceBundle('scheduler');
    expect(bundle.endsWith(join('dist', 'apps', 'scheduler', 'main.js'))).toBe(true);
    const baseline = await clients();
    const port = await freePort();
    proc = spawnService('scheduler', { REDIS_URL: redisServer.url, NATS_URL: natsServer.url, SCHEDULER_HTTP_ADDR: `127.0.0.1:${port}`, SAFETY_KERNEL_ADDR: '127.0.0.1:1', CORDUM_INSTANCE_ID: 'sched-bundle' }, { cwd: tmpdir() });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, 20_000, { message: 'scheduler /readyz 200' });
    expect(proc.hasLine(join('scheduler', 'config', 'pools.yaml'))).toBe(true);
    expect(proc.hasLine('maxmemory-policy')).toBe(false); // noeviction: nothing to warn about
    expect(await clients()).toBeGreaterThan(baseline);
    proc.kill('SIGTERM');
    expect(await proc.waitExit(15_000)).toEqual({ code: 0, signal: null });
    await waitFor(async () => (await clients()) === baseline, 5_000, { message: 'redis clients back to baseline' });
  });

  it('warns at start, naming the policy, when Redis may evict keys', async () => {
    await redis.config('SET', 'maxmemory-policy', 'volatile-lru');
    try {
      const port = await freePort();
      const p = spawnService('scheduler', { REDIS_URL: redisServer.url, NATS_URL: natsServer.url, SCHEDULER_HTTP_ADDR: `127.0.0.1:${port}`, SAFETY_KERNEL_ADDR: '127.0.0.1:1', CORDUM_INSTANCE_ID: 'sched-evict' }, { cwd: tmpdir() });
      proc = p;
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, 20_000, { message: 'scheduler /readyz 200' });
      expect(p.output.filter((l) => l.includes('set maxmemory-policy noeviction') && l.includes('volatile-lru'))).toHaveLength(1);
      p.kill('SIGTERM');
      expect(await p.waitExit(15_000)).toEqual({ code: 0, signal: null });
    } finally {
      await redis.config('SET', 'maxmemory-policy', 'noeviction');
    }
  });
});
