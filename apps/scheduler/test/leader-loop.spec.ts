import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { createLeaderLoop, type LeaderLoop } from '../src/leader-loop';

// The reconciler's stale-jobs gauge is set by the leader's scan only. A replica that lost the
// lease kept exporting its last count, so `max(cordum_scheduler_stale_jobs) > 0` could alert
// for good; every turn a replica is not the leader now zeroes it (notLeader).

const KEY = 'cordum:test:leader-loop';
let server: TestServer;
let redis: RedisClient;
const loops: LeaderLoop[] = [];

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await Promise.all(loops.map((l) => l.stop()));
  await closeRedis(redis);
  await server.stop();
});

function loop(owner: string, gauge: { value: number }): LeaderLoop {
  const l = createLeaderLoop({
    name: owner,
    locks: createLocks(redis),
    key: KEY,
    owner,
    // 3 s between the last renew and the step-down timer: a stalled jest worker does not make the
    // leader step down before its renew's answer is read (1.2 s did, on a loaded box)
    ttlMs: 4_000,
    renewMs: 1_000,
    periodMs: () => 50,
    logger: createLogger({ service: 'test', instance: owner, level: 'error', write: () => undefined }),
    run: async () => {
      gauge.value = 7;
    },
    notLeader: () => {
      gauge.value = 0;
    },
  });
  loops.push(l);
  l.start();
  return l;
}

it('a replica that is not the leader, or stopped being it, reports 0; the leader keeps its figure', async () => {
  const a = { value: -1 };
  const b = { value: -1 };
  const first = loop('replica-a', a);
  await waitFor(() => first.isLeader() && a.value === 7, 5_000, { message: 'a leads and scans' });
  loop('replica-b', b);
  await waitFor(() => b.value === 0, 5_000, { message: 'b zeroes its gauge' });
  expect(a.value).toBe(7);

  // another owner takes the lease away from a (its renew finds it taken: "leadership lost")
  await redis.set(KEY, 'someone-else', 'PX', 60_000);
  await waitFor(() => !first.isLeader(), 5_000, { message: 'a steps down' });
  await waitFor(() => a.value === 0, 5_000, { message: 'a zeroes its gauge after losing the lease' });
});

it('a Redis outage that fails every turn is logged once per 30 s, in plain words; another failure, or a success, starts a new run', async () => {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ service: 'test', instance: 'failing', level: 'warn', write: (l) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  let mode: 'outage' | 'bug' | 'ok' = 'outage';
  let turns = 0;
  const l = createLeaderLoop({
    name: 'pending replayer',
    locks: createLocks(redis),
    key: `${KEY}:failing`,
    owner: 'failing',
    ttlMs: 1_500,
    renewMs: 300,
    periodMs: () => 20,
    logger,
    run: async () => {
      turns++;
      if (mode === 'outage') throw new MaxRetriesPerRequestError(1);
      if (mode === 'bug') throw new Error('snapshot does not parse');
    },
  });
  loops.push(l);
  l.start();
  const failed = () => lines.filter((r) => r['msg'] === 'pending replayer turn failed');
  await waitFor(() => turns >= 10, 5_000, { message: 'ten failing turns' });
  expect(failed()).toHaveLength(1);
  expect(failed()[0]!['err']).toEqual({ name: 'MaxRetriesPerRequestError', message: 'redis unavailable (command not sent: connection down)' });

  mode = 'bug';
  await waitFor(() => failed().length === 2, 2_000, { message: 'a failure of another kind is logged at once' });
  expect((failed()[1]!['err'] as { message: string }).message).toBe('snapshot does not parse');
  expect(failed()[1]!['suppressed']).toBeGreaterThanOrEqual(1);

  mode = 'ok';
  const okFrom = turns;
  await waitFor(() => turns >= okFrom + 2, 2_000, { message: 'a turn succeeds' });
  mode = 'bug';
  await waitFor(() => failed().length === 3, 2_000, { message: 'after a success the same failure is logged again' });
});

it('a replica elected leader runs its first turn at once, not a period later (P287): a takeover after a crash', async () => {
  const key = `${KEY}:takeover`;
  // the crashed leader's lease, about to expire
  await redis.set(key, 'crashed-replica', 'PX', 1_000);
  let turns = 0;
  const l = createLeaderLoop({
    name: 'snapshot writer',
    locks: createLocks(redis),
    key,
    owner: 'survivor',
    ttlMs: 4_000,
    renewMs: 500,
    // an hour: only the election can start a turn within the test
    periodMs: () => 3_600_000,
    logger: createLogger({ service: 'test', instance: 'survivor', level: 'error', write: () => undefined }),
    run: async () => {
      turns++;
    },
  });
  loops.push(l);
  l.start();
  await waitFor(() => l.isLeader(), 5_000, { message: 'the survivor takes the lease once it expires' });
  await waitFor(() => turns === 1, 2_000, { message: 'its first turn runs on election' });
});
