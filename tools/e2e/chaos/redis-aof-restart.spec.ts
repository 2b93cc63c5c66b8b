// The stack on a redis-server that persists every write (`appendonly yes`, `appendfsync always`),
// SIGKILLed under load and started again on the same data dir, as a crash or a restart of a
// production Redis with AOF is. Two gateways, two schedulers, two echo workers. Unlike a
// Redis without persistence (redis-restart.spec) nothing acknowledged is lost, so every job must
// finish: submits met by the outage get 503 and are retried with the same Idempotency-Key;
// commands in flight at the kill fail in the services (a claim, a finish, a lock), which must
// retry or recover them; every key ends with one job, SUCCEEDED and executed once, and no job a
// client was told failed runs at all. Executions are counted from the workers' exec logs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RedisClient } from '@cordum/redis';
import { startStack, type Stack } from '../test/stack';
import { closeRedis, keyedLoadWithFault, killAndRestart, redisFor, shortTimeoutsFile, warmUp } from './ha-helpers';

const JOBS = 300;
const KILL_AFTER = 100;
/** How long Redis stays down once every service has reported it. */
const DOWN_MS = 2_000;

describe('the stack on a Redis with AOF, SIGKILLed under load and restarted on its data', () => {
  let stack: Stack;
  let redis: RedisClient | undefined;
  let dir: string;
  const everyId = new Set<string>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-e2e-redis-aof-'));
    stack = await startStack({
      gateways: 2,
      schedulers: 2,
      workers: 2,
      redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always'],
      workerEnv: { WORKER_ECHO_DELAY: '20ms' },
      schedulerEnv: { SCHEDULER_PENDING_REPLAY_AGE: '5s', SCHEDULER_DISPATCH_VERIFY_DELAY: '2s', TIMEOUT_CONFIG_PATH: shortTimeoutsFile(dir) },
    });
    redis = redisFor(stack);
    await warmUp(stack, redis, 'aof-warm-up', everyId);
  }, 180_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`${JOBS} keyed submits over both gateways, Redis SIGKILLed after ${KILL_AFTER} and restarted on its AOF: every key one job, SUCCEEDED and executed once`, async () => {
    const test = redis;
    if (!test) throw new Error('no test client');
    const summary = await keyedLoadWithFault(stack, test, {
      prefix: 'aof',
      jobs: JOBS,
      faultAfter: KILL_AFTER,
      budgetMs: 60_000,
      everyId,
      fault: async () => `killed after ${KILL_AFTER} answers; ${await killAndRestart(stack, 'redis', DOWN_MS)}`,
    });
    console.log(`[redis aof restart] ${summary}`);
  }, 300_000);
});
