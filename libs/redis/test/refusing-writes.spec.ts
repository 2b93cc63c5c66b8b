// P277: a Redis that answers but refuses every write (maxmemory under noeviction, a failed
// persistence, a read-only replica) is unavailable for the callers, like one that does not answer:
// a bus consumer holds its message (P101) instead of spending its 20 deliveries on NAKs. The errors
// here come from a real redis-server, through a plain command and through a script.
import { startRedis, type TestServer } from '@cordum/testing';
import { closeRedis, createRedis, defineScripts, isRedisUnavailable, redisCommandNotRun, scriptSpec, toRedisError, type RedisClient } from '../src';

let server: TestServer;
let redis: RedisClient;
let admin: RedisClient;

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'refusing-writes' });
  admin = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'refusing-writes-admin' });
});

afterAll(async () => {
  await closeRedis(redis);
  await closeRedis(admin);
  await server.stop();
});

async function failure(p: Promise<unknown>): Promise<Error> {
  return p.then(() => new Error('the write succeeded'), (e: unknown) => e as Error);
}

it('OOM at maxmemory under noeviction: unavailable (held by consumers), from a command and from a script; not taken for "did not run"', async () => {
  const script = defineScripts(redis, [scriptSpec('setOne-1.lua', "return redis.call('SET', KEYS[1], ARGV[1])")]);
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  try {
    const plain = await failure(redis.set('k', 'v'));
    const scripted = await failure(script.run('setOne', ['k2'], ['v']));
    for (const err of [plain, scripted]) {
      expect(err.message).toMatch(/OOM command not allowed/);
      expect({ unavailable: isRedisUnavailable(err), notRun: redisCommandNotRun(err), code: toRedisError(err).code }).toEqual({ unavailable: true, notRun: false, code: 'redis_unavailable' });
    }
  } finally {
    await admin.config('SET', 'maxmemory', '0');
  }
  expect(await redis.set('k', 'v')).toBe('OK');
});

it('READONLY from a replica: unavailable', async () => {
  await admin.config('SET', 'replica-read-only', 'yes');
  // A replica of a master that does not exist: it keeps refusing writes.
  await admin.call('REPLICAOF', '127.0.0.1', '1');
  try {
    const err = await failure(redis.set('k', 'v'));
    expect(err.message).toMatch(/READONLY/);
    expect(isRedisUnavailable(err)).toBe(true);
  } finally {
    await admin.call('REPLICAOF', 'NO', 'ONE');
  }
});

it('the other refusals by their text (MISCONF, BUSY, NOREPLICAS); an ordinary bad command stays a bad command', () => {
  for (const text of [
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    'NOREPLICAS Not enough good replicas to write.',
  ]) expect({ text, unavailable: isRedisUnavailable(new Error(text)) }).toEqual({ text, unavailable: true });
  for (const text of ['WRONGTYPE Operation against a key holding the wrong kind of value', 'ERR unknown command', 'BUSYKEY Target key name already exists.']) {
    expect({ text, unavailable: isRedisUnavailable(new Error(text)) }).toEqual({ text, unavailable: false });
  }
});
