// forEachLimit runs a leader turn's items (jobs, groups) a few at a time. It rejected as soon as
// one item failed while the other workers kept going: a turn failed on one Redis error was over
// for its leader loop while it still drove jobs, so the next turn could run beside it in the same
// process, and stop() did not wait for it. A turn now settles once every item is done. The loop
// part runs against real Redis (the leader lease).
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { forEachLimit } from '../src/for-each';
import { createLeaderLoop } from '../src/leader-loop';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('forEachLimit', () => {
  it('settles only once every item is done, runs the items after a failure, and rejects with the first error', async () => {
    const done: string[] = [];
    let inFlight = 0;
    let most = 0;
    const run = forEachLimit(['fails', 'slow', 'fails-too', 'after', 'last'], 2, async (item) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      try {
        if (item === 'fails') throw new Error('first');
        if (item === 'fails-too') throw new Error('second');
        await tick(item === 'slow' ? 150 : 10);
        done.push(item);
      } finally {
        inFlight -= 1;
      }
    });
    // Before: rejected at once, 'slow' still running and 'after', 'last' not started.
    await expect(run).rejects.toThrow('first');
    expect(done.sort()).toEqual(['after', 'last', 'slow']);
    expect(inFlight).toBe(0);
    expect(most).toBe(2);
  });

  it('resolves when every item succeeds; nothing to do is nothing run', async () => {
    const seen: number[] = [];
    await forEachLimit([1, 2, 3], 8, async (n) => void seen.push(n));
    expect(seen.sort()).toEqual([1, 2, 3]);
    await forEachLimit([], 4, async () => {
      throw new Error('never');
    });
  });
});

describe('a leader turn that failed is over before the next one starts, and stop() waits for it (real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('no two turns overlap, and nothing of a turn runs after stop()', async () => {
    let inFlight = 0;
    let overlapped = false;
    let turns = 0;
    let afterStop = false;
    let stopped = false;
    const loop = createLeaderLoop({
      name: 'test loop',
      locks: createLocks(redis),
      key: 'cordum:test:for-each-loop',
      owner: 'for-each',
      ttlMs: 1_500,
      renewMs: 300,
      periodMs: () => 10,
      logger: createLogger({ service: 'test', instance: 'for-each', level: 'error', write: () => undefined }),
      // A turn over three jobs: the first fails at once (a Redis error), the others take a while.
      run: () => {
        turns += 1;
        return forEachLimit([0, 1, 2], 3, async (n) => {
          inFlight += 1;
          if (inFlight > 3) overlapped = true;
          try {
            if (n === 0) throw new Error('redis said no');
            await tick(100);
            if (stopped) afterStop = true;
          } finally {
            inFlight -= 1;
          }
        });
      },
    });
    loop.start();
    await waitFor(() => turns >= 4, 5_000, { message: 'four turns' });
    await loop.stop();
    stopped = true;
    await tick(200);
    expect(overlapped).toBe(false);
    expect(afterStop).toBe(false);
    expect(inFlight).toBe(0);
  });
});
