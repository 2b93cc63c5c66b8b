// BEHAVIOURS §8, "NATS down": the stack's one nats-server gets SIGKILL under load and is started
// again on the same port and JetStream store, as a crash or an upgrade of a single-node NATS
// does. Two gateways, two schedulers, two echo workers. Every service's /readyz must turn 503
// while NATS is gone and 200 again after, without a restart; submits met by the outage fail as
// D11 says (503, key released) and are retried with the same Idempotency-Key; every key ends with
// one job, SUCCEEDED and executed once, and no job that a client was told failed runs at all.
// Executions are counted from the workers' exec logs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@cordum/testing';
import type { RedisClient } from '@cordum/redis';
import { pool, readyz, startStack, type Stack } from '../test/stack';
import { closeRedis, executionAudit, redisFor, submitKeyed, waitAllReady, waitTerminal } from './ha-helpers';

const JOBS = 300;
const KILL_AFTER = 100;
/** How long NATS stays down once every service has reported it (a restart takes about this). */
const DOWN_MS = 2_000;
const CLIENT_BUDGET_MS = 60_000;

describe('the stack\'s nats-server SIGKILLed under load and restarted on the same store', () => {
  let stack: Stack;
  let redis: RedisClient;
  let dir: string;
  let warmUpId: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-e2e-nats-restart-'));
    // Short timeouts, so a dispatch or a result lost with the server is recovered within the
    // test (running stays above the 30 s result redelivery bound, as the scheduler asks).
    const timeouts = join(dir, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 8\n  running_timeout_seconds: 40\n  scan_interval_seconds: 1\n');
    stack = await startStack({
      gateways: 2,
      schedulers: 2,
      workers: 2,
      workerEnv: { WORKER_ECHO_DELAY: '20ms' },
      schedulerEnv: { SCHEDULER_PENDING_REPLAY_AGE: '5s', SCHEDULER_DISPATCH_VERIFY_DELAY: '2s', TIMEOUT_CONFIG_PATH: timeouts },
    });
    redis = redisFor(stack);
    // One job through first: a scheduler that starts cold parks jobs until the workers' next
    // heartbeat (up to 5 s), and the outage is to meet a stack that is dispatching.
    const warm = await submitKeyed(stack, 0, { key: 'natsr-warm-up', body: { topic: 'job.echo', prompt: 'warm up' }, budgetMs: 10_000 });
    warmUpId = warm.jobId;
    expect((await waitTerminal(redis, [warmUpId], 20_000)).get(warmUpId)).toBe('SUCCEEDED');
  }, 180_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`${JOBS} keyed submits over both gateways: every service unready while NATS is down and ready after, every key one job, SUCCEEDED and executed once`, async () => {
    let answered = 0;
    let retried = 0;
    const fault: { done?: Promise<{ unreadyMs: number; downMs: number }> } = {};

    // Kills the server, waits until every service has answered /readyz with 503 at least once,
    // keeps it down DOWN_MS more, and starts it again on the same port and store.
    const killAndRestart = async (): Promise<{ unreadyMs: number; downMs: number }> => {
      const killedAt = Date.now();
      stack.nats.process.kill('SIGKILL');
      await stack.nats.process.waitExit(5_000);
      const seenDown = new Set<string>();
      await waitFor(async () => {
        await Promise.all([...stack.healthPorts].map(async ([name, port]) => {
          if (!(await readyz(port))) seenDown.add(name);
        }));
        const up = [...stack.healthPorts.keys()].filter((n) => !seenDown.has(n));
        if (up.length > 0) throw new Error(`still ready: ${up.join(', ')}`);
        return true;
      }, 15_000, { message: 'every service unready without NATS', intervalMs: 100 });
      const unreadyMs = Date.now() - killedAt;
      // The outage itself: NATS stays down this long while submits keep arriving.
      await new Promise((r) => setTimeout(r, DOWN_MS));
      await stack.restartNats();
      return { unreadyMs, downMs: Date.now() - killedAt };
    };

    const submit = async (i: number): Promise<string> => {
      const out = await submitKeyed(stack, i, { key: `natsr-${i}`, body: { topic: 'job.echo', prompt: `natsr ${i}` }, budgetMs: CLIENT_BUDGET_MS });
      retried += out.retried;
      if (++answered === KILL_AFTER) {
        fault.done = killAndRestart();
        fault.done.catch(() => undefined); // awaited, and its error thrown, after the submits
      }
      return out.jobId;
    };

    const ids = await pool(Array.from({ length: JOBS }, (_, i) => i), 20, submit);
    if (!fault.done) throw new Error('NATS was never killed');
    const { unreadyMs, downMs } = await fault.done;
    const restartedAt = Date.now();
    expect(new Set(ids).size).toBe(JOBS);

    const final = await waitTerminal(redis, ids, 120_000, { stack });
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });
    // A submit answered 503 ended its job FAILED (bus_unavailable): that job must never run,
    // even where its submit reached the stream before the server died.
    const known = new Set([...ids, warmUpId]);
    expect([...stack.executions().keys()].filter((id) => !known.has(id))).toEqual([]);

    // Back on the restarted server, and no service exited or was restarted on the way.
    await waitAllReady(stack, 20_000);
    expect([...stack.procs].filter(([, p]) => !p.running).map(([name]) => name)).toEqual([]);
    console.log(`[nats restart] killed after ${KILL_AFTER} answers; every service unready ${unreadyMs} ms after the kill; down ${downMs} ms; ${retried} submit retries; all ${JOBS} done ${Date.now() - restartedAt} ms after the restart`);
  }, 300_000);
});
