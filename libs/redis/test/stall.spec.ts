// The event loop stalled (a long GC pause, SIGSTOP, a starved VM) past a command's timeout while
// its reply arrived: expired timers run before the socket is read, and the command was rejected
// "Command timed out" though Redis had run it. The timeout now gives the reply one more I/O turn.
import { startRedis, type TestServer } from '@cordum/testing';
import { closeRedis, COMMAND_TIMEOUT_WAITS_FOR_PENDING_REPLY, createRedis, type RedisClient } from '../src';

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
      expect(Date.now() - t0).toBeLessThan(1_000);
    } finally {
      server.process.thaw();
    }
    await expect(redis.get('stall:k')).resolves.toBe('v');
  });
});
