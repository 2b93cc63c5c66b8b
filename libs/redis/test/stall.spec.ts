// The event loop stalled (a long GC pause, SIGSTOP, a starved VM) past a command's timeout while
// its reply arrived: expired timers run before the socket is read, and the command was rejected
// "Command timed out" though Redis had run it. The timeout now gives the reply one more I/O turn.
import { startRedis, startRedisCluster, waitFor, type TestCluster, type TestServer } from '@cordum/testing';
import { closeRedis, COMMAND_TIMEOUT_WAITS_FOR_PENDING_REPLY, createRedis, pingRedis, SOCKET_TIMEOUT_WAITS_FOR_PENDING_REPLY, type RedisClient } from '../src';
import { urlCredentials } from '../src/live-files';

/** Blocks the event loop for `ms` from the check phase, so the next turn begins with the timers. */
const stallNextTurn = (ms: number): void => {
  setImmediate(() => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      // the stall
    }
  });
};

describe('a command whose timeout fires during an event-loop stall', () => {
  let server: TestServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, commandTimeoutMs: 200 });
    await redis.set('stall:k', 'v');
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('applies to this ioredis', () => {
    expect(COMMAND_TIMEOUT_WAITS_FOR_PENDING_REPLY).toBe(true);
  });

  it('gets the reply that arrived during the stall, not "Command timed out"', async () => {
    for (let i = 0; i < 5; i++) {
      const reply = redis.get('stall:k');
      stallNextTurn(500);
      await expect(reply).resolves.toBe('v');
    }
  });

  it('a command whose reply never comes still times out', async () => {
    await server.process.freeze();
    try {
      const t0 = Date.now();
      await expect(redis.get('stall:k')).rejects.toThrow('Command timed out');
      // the 200 ms command timeout, not the 5 s socket timeout (room for a loaded machine)
      expect(Date.now() - t0).toBeLessThan(3_000);
    } finally {
      server.process.thaw();
    }
    await expect(redis.get('stall:k')).resolves.toBe('v');
  });

  // P151's purpose, kept with the socket timeout's extra turn: a Redis that stays silent with a
  // command out is cut after the socket timeout (5 s here), and answers again once it is back.
  it('a frozen Redis still has its connection cut by the socket timeout', async () => {
    const errors: string[] = [];
    let closes = 0;
    const onError = (err: Error): void => void errors.push(err.message);
    const onClose = (): void => void closes++;
    redis.on('error', onError);
    redis.on('close', onClose);
    await server.process.freeze();
    try {
      const t0 = Date.now();
      await expect(redis.get('stall:k')).rejects.toThrow('Command timed out');
      await waitFor(() => closes > 0, 10_000, { message: 'the silent connection is closed' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(4_900);
      expect(errors.some((m) => /Socket timeout/.test(m))).toBe(true);
    } finally {
      server.process.thaw();
      redis.off('error', onError);
      redis.off('close', onClose);
    }
    await waitFor(async () => (await redis.get('stall:k').catch(() => null)) === 'v', 15_000, { message: 'answers again once thawed' });
  }, 30_000);
});

// A stall longer than the socket timeout (P151: 5 s with the default 1.5 s command timeout): its
// timer ran in the same timers phase as the command's, before the socket was read, and destroyed
// the connection, so the reply already there was never read and the caller was told the command
// failed though Redis had run it. The socket timeout now gives the reply one more I/O turn too.
describe('a stall longer than the socket timeout, default timeouts', () => {
  let server: TestServer;
  let redis: RedisClient;
  let closes = 0;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    redis.on('close', () => void closes++);
    await redis.set('long:n', '0');
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('applies to this ioredis', () => {
    expect(SOCKET_TIMEOUT_WAITS_FOR_PENDING_REPLY).toBe(true);
  });

  it('a command in flight gets its reply after a 6 s stall, and its connection is kept', async () => {
    const reply = redis.incr('long:n');
    stallNextTurn(6_000);
    await expect(reply).resolves.toBe(1);
    // One more round trip on the same connection: a close from the stall would be seen by now.
    await expect(redis.get('long:n')).resolves.toBe('1');
    expect(closes).toBe(0);
  }, 30_000);
});

// MULTI, pipelines and a cluster client after a stall (the patched timeout on each path), and
// urlCredentials with a bad %-escape (loadConfig refuses such a REDIS_URL; the function throws URIError, as ioredis does).
describe('a stall past the command timeout, standalone', () => {
  let server: TestServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1, commandTimeoutMs: 200 });
    await redis.set('r:k', 'v');
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('MULTI/EXEC and a pipeline get their replies', async () => {
    for (let i = 0; i < 3; i++) {
      const tx = redis.multi().incr('r:n').get('r:k').exec();
      const pl = redis.pipeline().get('r:k').incr('r:m').exec();
      stallNextTurn(500);
      const [txr, plr] = await Promise.all([tx, pl]);
      expect(txr?.map(([e]) => e)).toEqual([null, null]);
      expect(txr?.[1]?.[1]).toBe('v');
      expect(plr?.map(([e]) => e)).toEqual([null, null]);
    }
  });

  it('a command timeout of 0 (none): a blocking command waits past 1.5 s', async () => {
    const c = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, commandTimeoutMs: 0 });
    try {
      const t0 = Date.now();
      expect(await c.blpop('r:empty', 2)).toBeNull();
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1_900);
    } finally {
      await closeRedis(c);
    }
  });
});

describe('a stall past the command timeout, cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1, commandTimeoutMs: 200 });
    // The 200 ms timeout runs from the call (P46): wait until the cluster is connected before the writes.
    await waitFor(async () => (await pingRedis(redis, 1000)) || null, 20_000, { message: 'the cluster answers PING' });
    for (let i = 0; i < 20; i++) await redis.set(`c:${i}`, String(i));
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('commands on every master get their replies', async () => {
    for (let round = 0; round < 3; round++) {
      const replies = Array.from({ length: 20 }, (_, i) => redis.get(`c:${i}`));
      stallNextTurn(500);
      expect(await Promise.all(replies)).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    }
  });
});

describe('urlCredentials', () => {
  it('a password with a bad %-escape throws URIError (as ioredis does for a standalone URL); loadConfig now refuses such a REDIS_URL', () => {
    expect(() => urlCredentials('redis://:100%sure@h:6379')).toThrow(URIError);
    expect(urlCredentials('redis://:100%25sure@h:6379')).toEqual({ password: '100%sure' });
    expect(urlCredentials('redis://cordum@h:6379')).toEqual({ username: 'cordum' }); // no password: no AUTH is sent
  });
});
