// BEHAVIOURS §8, "NATS down": the stack's one nats-server gets SIGKILL under load and is started
// again on the same port and JetStream store, as a crash or an upgrade of a single-node NATS
// does; then it is frozen (SIGSTOP) past a publish's retry budget and woken. Two gateways, two
// schedulers, two echo workers. Every service's /readyz must turn 503 while NATS is gone and
// 200 again after, without a restart; submits met by the outage fail as D11 says (503) and are
// retried with the same Idempotency-Key; every key ends with one job, SUCCEEDED and executed
// once, and no job that a client was told failed runs at all. Executions are counted from the
// workers' exec logs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RedisClient } from '@cordum/redis';
import { startStack, type Stack } from '../test/stack';
import { closeRedis, keyedLoadWithFault, killAndRestart, redisFor, shortTimeoutsFile, warmUp } from './ha-helpers';

const JOBS = 300;
const KILL_AFTER = 100;
/** How long NATS stays down once every service has reported it (a restart takes about this). */
const DOWN_MS = 2_000;
/** How long the frozen server stays stopped. */
const FREEZE_MS = 5_000;
const CLIENT_BUDGET_MS = 60_000;

describe('the stack\'s one nats-server killed and restarted, then frozen, under load', () => {
  let stack: Stack;
  let redis: RedisClient;
  let dir: string;
  /** Every job id submitted in this file: no other job may ever run. */
  const everyId = new Set<string>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-e2e-nats-restart-'));
    // Short timeouts, so a dispatch or a result lost with the server is recovered within the test.
    const timeouts = shortTimeoutsFile(dir);
    stack = await startStack({
      gateways: 2,
      schedulers: 2,
      workers: 2,
      workerEnv: { WORKER_ECHO_DELAY: '20ms' },
      schedulerEnv: { SCHEDULER_PENDING_REPLAY_AGE: '5s', SCHEDULER_DISPATCH_VERIFY_DELAY: '2s', TIMEOUT_CONFIG_PATH: timeouts },
    });
    redis = redisFor(stack);
    await warmUp(stack, redis, 'natsr-warm-up', everyId);
  }, 180_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const underLoad = (prefix: string, fault: () => Promise<string>): Promise<string> =>
    keyedLoadWithFault(stack, redis, { prefix, jobs: JOBS, faultAfter: KILL_AFTER, budgetMs: CLIENT_BUDGET_MS, everyId, fault });

  it(`SIGKILL, then a restart on the same port and store: every service unready while NATS is down, ${JOBS} keyed submits each one job, SUCCEEDED and executed once`, async () => {
    const summary = await underLoad('natsr', async () => `killed after ${KILL_AFTER} answers; ${await killAndRestart(stack, 'nats', DOWN_MS)}`);
    console.log(`[nats restart] ${summary}`);
  }, 300_000);

  it(`SIGSTOP past a publish's retry budget, then SIGCONT: ${JOBS} keyed submits each one job, SUCCEEDED and executed once`, async () => {
    const summary = await underLoad('natsf', async () => {
      await stack.nats.process.freeze();
      try {
        // The freeze itself: longer than a submit publish's 2 s budget (D43), so submits in it
        // fail as D11 says, while the connections stay open and the services cannot tell.
        await new Promise((r) => setTimeout(r, FREEZE_MS));
      } finally {
        stack.nats.process.kill('SIGCONT');
      }
      return `frozen ${FREEZE_MS} ms after ${KILL_AFTER} answers`;
    });
    console.log(`[nats freeze] ${summary}`);
  }, 300_000);
});
