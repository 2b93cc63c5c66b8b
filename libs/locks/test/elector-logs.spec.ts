// The elector's log during a Redis outage (decisions.md P97): a follower tries every renewMs or
// less and every try fails, so `leader campaign failed` is throttled as `redis connection error`
// is, and names the dropped command as Redis being unavailable, not as an ioredis option.
import { closeRedis, createRedis, REDIS_NOT_SENT_TEXT, REPORT_EVERY_MS, type RedisClient } from '@cordum/redis';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { createElector, createLocks, type LockLogger } from '../src';

type Line = { level: string; msg: string; fields: Record<string, unknown> };

function capture(): { lines: Line[]; logger: LockLogger } {
  const lines: Line[] = [];
  const push = (level: string) => (msg: string, fields?: object) => void lines.push({ level, msg, fields: { ...fields } });
  return { lines, logger: { info: push('info'), warn: push('warn') } };
}

describe('@cordum/locks elector logs', () => {
  it('a Redis outage logs one "leader campaign failed" for many failed tries, with a plain reason; after Redis returns it is elected', async () => {
    const server: TestServer = await startRedis();
    const redis: RedisClient = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    const { lines, logger } = capture();
    const locks = createLocks(redis);
    let tries = 0;
    const elector = createElector((o) => {
      tries++;
      return locks.tryAcquire(o);
    }, { key: 'elect:{logs}', owner: 'a', ttlMs: 400, renewMs: 50, logger });
    try {
      await waitFor(() => pingRedisOnce(redis), 5_000, { message: 'client connects' });
      await server.process.stop(5_000);
      elector.start();
      await waitFor(() => tries >= 10, 20_000, { message: 'ten failed campaign tries' });
      const failed = lines.filter((l) => l.msg === 'leader campaign failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]?.fields).toEqual({ key: 'elect:{logs}', err: expect.any(String) as string });
      expect(lines.map((l) => JSON.stringify(l.fields)).join('\n')).not.toMatch(/maxRetriesPerRequest|max retries per request/);
      // Whichever came first of what an outage gives: a timeout, a closed connection, a command dropped unsent.
      expect([REDIS_NOT_SENT_TEXT, 'Command timed out', 'Connection is closed.']).toContain(failed[0]?.fields['err']);
      const restarted = await server.restart();
      try {
        await waitFor(() => elector.isLeader(), 20_000, { message: 'elected once Redis is back' });
        expect(lines.filter((l) => l.msg === 'leader campaign failed')).toHaveLength(1);
      } finally {
        await elector.stop();
        await closeRedis(redis);
        await restarted.stop();
      }
    } finally {
      await elector.stop();
      await closeRedis(redis);
      await server.stop();
    }
  });

  it('logs again when the error changes, with the failures not logged since, and at once after a successful try', async () => {
    const { lines, logger } = capture();
    // A scripted campaign: 5 × "a", 5 × "b", one try that finds the lease taken (null), then "b".
    const script: (string | null)[] = ['a', 'a', 'a', 'a', 'a', 'b', 'b', 'b', 'b', 'b', null, 'b'];
    let i = 0;
    const elector = createElector(() => {
      const next = script[Math.min(i++, script.length - 1)];
      return next === null ? Promise.resolve(null) : Promise.reject(new Error(next));
    }, { key: 'elect:{script}', owner: 'a', ttlMs: 100, renewMs: 10, logger });
    elector.start();
    try {
      await waitFor(() => i >= script.length + 3, 10_000, { message: 'the script and three more tries' });
    } finally {
      await elector.stop();
    }
    const failed = lines.filter((l) => l.msg === 'leader campaign failed').map((l) => l.fields);
    // Within REPORT_EVERY_MS of the first: "a"; "b" with the 4 "a"s not logged; "b" again after the success.
    expect(REPORT_EVERY_MS).toBe(30_000);
    expect(failed).toEqual([
      { key: 'elect:{script}', err: 'a' },
      { key: 'elect:{script}', err: 'b', suppressed: 4 },
      { key: 'elect:{script}', err: 'b' },
    ]);
  });
});

async function pingRedisOnce(redis: RedisClient): Promise<boolean> {
  return (await redis.ping().catch(() => null)) === 'PONG';
}
