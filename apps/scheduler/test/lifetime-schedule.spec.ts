// P244: when the lifetime keeper runs. Its last run is kept in Redis, so replicas that restart
// more often than the period (an hour with the default JOB_TTL) do not each start the wait again
// and never run; a Redis with no last run gets one stamped and waits a period (a stack started on
// a Redis full of jobs does not renew them all in its first minute). Real Redis; the context is
// the few fields the keeper reads.
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startRedis, type TestServer } from '@cordum/testing';
import type { SchedulerContext } from '../src/context';
import { keepLifetimes, LIFETIME_LAST_RUN_KEY, lifetimeCheckMs, lifetimePeriodMs } from '../src/lifetime';

let server: TestServer;
let redis: RedisClient;
let runs = 0;
const TTL = 3_600_000;
const ctx = {
  config: { jobTtlMs: TTL },
  store: {
    renewLive: () => {
      runs += 1;
      return Promise.resolve(0);
    },
  },
  logger: createLogger({ service: 'scheduler', instance: 't', level: 'error', write: () => undefined }),
} as unknown as SchedulerContext;

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
});

afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

it('periods: an eighth of JOB_TTL within 5 s..1 h, looked at every minute at most', () => {
  expect([lifetimePeriodMs(60_000), lifetimePeriodMs(TTL), lifetimePeriodMs(7 * 86_400_000)]).toEqual([7_500, 450_000, 3_600_000]);
  expect([lifetimeCheckMs(60_000), lifetimeCheckMs(7 * 86_400_000)]).toEqual([7_500, 60_000]);
});

it('runs a period after the last run recorded in Redis, whoever ran it; a Redis without one starts the wait', async () => {
  await redis.del(LIFETIME_LAST_RUN_KEY);
  await keepLifetimes(ctx, redis);
  expect(runs).toBe(0);
  const stamped = Number(await redis.get(LIFETIME_LAST_RUN_KEY));
  expect(Math.abs(stamped - Date.now())).toBeLessThan(5_000);
  // A replica that has just started (another one ran it minutes ago) does not run early...
  await redis.set(LIFETIME_LAST_RUN_KEY, String(Date.now() - lifetimePeriodMs(TTL) + 60_000));
  await keepLifetimes(ctx, redis);
  expect(runs).toBe(0);
  // ...and one whose period has passed runs at its first look, however recently it started.
  await redis.set(LIFETIME_LAST_RUN_KEY, String(Date.now() - lifetimePeriodMs(TTL) - 1));
  await keepLifetimes(ctx, redis);
  expect(runs).toBe(1);
  expect(Number(await redis.get(LIFETIME_LAST_RUN_KEY))).toBeGreaterThan(Date.now() - 5_000);
  expect(await redis.pttl(LIFETIME_LAST_RUN_KEY)).toBeGreaterThan(TTL);
});
