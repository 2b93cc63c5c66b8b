// P150: a command written to a connection that closes before its reply fails at once as
// unavailable (outcome unknown) and is never sent again. ioredis re-sent it after the reconnect,
// so Redis ran it twice and the caller got the second run's answer: a worker's claim came back
// "duplicate" and its job was dropped. Real redis-server frozen (SIGSTOP) with the command in its
// socket buffer, the client's socket destroyed, the server thawed: it runs what it had read.
import { startRedis, startRedisCluster, waitFor, type TestCluster, type TestServer } from '@cordum/testing';
import type { Cluster, Redis } from 'ioredis';
import { closeRedis, createRedis, defineScripts, isRedisUnavailable, REDIS_IN_FLIGHT_TEXT, scriptSpec, type RedisClient } from '../src';

const INCR = scriptSpec('incr-once-1', "return redis.call('INCR', KEYS[1])");

/** Sends the script with the server(s) frozen, cuts the client's sockets once it is written, thaws. */
async function cutInFlight(redis: RedisClient, servers: TestServer[], key: string, sockets: () => Redis[]): Promise<unknown> {
  const scripts = defineScripts(redis, [INCR]);
  await scripts.run('incr-once', [key], []); // loaded (EVALSHA), and the key exists: 1
  await Promise.all(servers.map((s) => s.process.freeze()));
  let outcome: unknown;
  try {
    const call = scripts.run<number>('incr-once', [key], []).then((v) => ({ value: v }), (err: unknown) => ({ err }));
    // Written within the turn (one write per turn): give it a few turns to leave.
    await new Promise((r) => setTimeout(r, 50));
    for (const s of sockets()) (s as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    await new Promise((r) => setTimeout(r, 200)); // past ioredis's first reconnect delay (50–100 ms)
    outcome = call;
  } finally {
    for (const s of servers) s.process.thaw();
  }
  return outcome;
}

describe('a command in flight when its connection closes, standalone', () => {
  let server: TestServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('fails as unavailable with "may or may not have run", and runs at most once', async () => {
    const result = (await (await cutInFlight(redis, [server], 'inflight:k', () => [redis as Redis]))) as { value?: number; err?: unknown };
    expect(result.value).toBeUndefined();
    expect(String((result.err as Error).message)).toBe(REDIS_IN_FLIGHT_TEXT);
    expect(isRedisUnavailable(result.err)).toBe(true);
    await waitFor(async () => (await redis.get('inflight:k').catch(() => null)) !== null, 10_000, { message: 'Redis answers again' });
    // 1 from the first run; 2 if Redis ran the cut command (its bytes were in its buffer); never 3.
    expect(Number(await redis.get('inflight:k'))).toBeLessThanOrEqual(2);
  });
});

describe('a command in flight when its node connection closes, cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1 });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('fails as unavailable and is not re-sent after the failover delay', async () => {
    const result = (await (await cutInFlight(redis, cluster.nodes, '{inflight}:k', () => (redis as Cluster).nodes('all')))) as { value?: number; err?: unknown };
    expect(result.value).toBeUndefined();
    expect(String((result.err as Error).message)).toBe(REDIS_IN_FLIGHT_TEXT);
    expect(isRedisUnavailable(result.err)).toBe(true);
    await waitFor(async () => (await redis.get('{inflight}:k').catch(() => null)) !== null, 20_000, { message: 'the cluster answers again' });
    expect(Number(await redis.get('{inflight}:k'))).toBeLessThanOrEqual(2);
  }, 60_000);
});
