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
import { pool, startStack, type Stack } from '../test/stack';
import { closeRedis, describeJobs, execRecords, executionAudit, redisFor, shortTimeoutsFile, submitKeyed, waitAllReady, waitAllSeenUnready, waitTerminal } from './ha-helpers';

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
    // One job through first: a scheduler that starts cold parks jobs until the workers' next
    // heartbeat (up to 5 s), and the outage is to meet a stack that is dispatching.
    const warm = await submitKeyed(stack, 0, { key: 'natsr-warm-up', body: { topic: 'job.echo', prompt: 'warm up' }, budgetMs: 10_000 });
    everyId.add(warm.jobId);
    expect((await waitTerminal(redis, [warm.jobId], 20_000)).get(warm.jobId)).toBe('SUCCEEDED');
  }, 180_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * JOBS keyed submits over both gateways, 20 at a time, retried with the same key on 503;
   * `fault` starts after KILL_AFTER answers, while the rest keep arriving. Then: every key one
   * job, SUCCEEDED and run once; no job that a client was told failed (503) ran at all, even
   * where its submit reached the stream; every service ready again, none exited. Returns a
   * line for the log.
   */
  const underLoad = async (prefix: string, fault: () => Promise<string>): Promise<string> => {
    let answered = 0;
    let retried = 0;
    const outage: { done?: Promise<string> } = {};
    const submit = async (i: number): Promise<string> => {
      const out = await submitKeyed(stack, i, { key: `${prefix}-${i}`, body: { topic: 'job.echo', prompt: `${prefix} ${i}` }, budgetMs: CLIENT_BUDGET_MS });
      retried += out.retried;
      if (++answered === KILL_AFTER) {
        outage.done = fault();
        outage.done.catch(() => undefined); // awaited, and its error thrown, after the submits
      }
      return out.jobId;
    };
    const ids = await pool(Array.from({ length: JOBS }, (_, i) => i), 20, submit);
    if (!outage.done) throw new Error('the fault never started');
    const what = await outage.done;
    const endedAt = Date.now();
    expect(new Set(ids).size).toBe(JOBS);
    for (const id of ids) everyId.add(id);

    const final = await waitTerminal(redis, ids, 120_000, { stack }).catch((err: unknown) => {
      stack.keep(`${prefix}: jobs not terminal`);
      throw err;
    });
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    const audit = executionAudit(stack, ids);
    if (audit.twice.length + audit.never.length > 0) {
      const odd = [...audit.twice, ...audit.never].slice(0, 5);
      stack.keep(`${prefix}: execution audit failed`);
      console.error(`[${prefix}] execution audit failed: ${JSON.stringify({ audit, runs: execRecords(stack, odd), jobs: await describeJobs(redis, odd) })}`);
    }
    expect(audit).toEqual({ twice: [], never: [] });
    expect([...stack.executions().keys()].filter((id) => !everyId.has(id))).toEqual([]);
    const doneMs = Date.now() - endedAt;
    await waitAllReady(stack, 20_000);
    expect([...stack.procs].filter(([, p]) => !p.running).map(([name]) => name)).toEqual([]);
    return `${what}; ${retried} submit retries; all ${JOBS} done ${doneMs} ms after the fault ended`;
  };

  it(`SIGKILL, then a restart on the same port and store: every service unready while NATS is down, ${JOBS} keyed submits each one job, SUCCEEDED and executed once`, async () => {
    const summary = await underLoad('natsr', async () => {
      const killedAt = Date.now();
      stack.nats.process.kill('SIGKILL');
      await stack.nats.process.waitExit(5_000);
      // BEHAVIOURS §8: readiness reflects it. Every service must answer 503 at least once.
      await waitAllSeenUnready(stack, 15_000);
      const unreadyMs = Date.now() - killedAt;
      // The outage itself: NATS stays down this long while submits keep arriving.
      await new Promise((r) => setTimeout(r, DOWN_MS));
      await stack.restartNode('nats');
      return `killed after ${KILL_AFTER} answers; every service unready ${unreadyMs} ms after the kill; down ${Date.now() - killedAt} ms`;
    });
    console.log(`[nats restart] ${summary}`);
  }, 300_000);

  it(`SIGSTOP past a publish's retry budget, then SIGCONT: ${JOBS} keyed submits each one job, SUCCEEDED and executed once`, async () => {
    const summary = await underLoad('natsf', async () => {
      stack.nats.process.kill('SIGSTOP');
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
