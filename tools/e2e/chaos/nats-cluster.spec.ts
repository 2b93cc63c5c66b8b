// The whole stack on a 3-node NATS JetStream cluster (NATS_URL lists the three; the streams
// get 3 replicas): two gateways, two schedulers, two echo workers. Mid-run the node leading
// CORDUM_SYS gets SIGKILL. JetStream's replicated streams and consumers keep every stored
// message through the loss of one node, so no job may be lost or run twice: clients retry a
// submit cut off by the election with the same Idempotency-Key, as they would against a
// gateway, and executions are counted from the workers' exec logs.
import { connect, type NatsConnection } from 'nats';
import type { RedisClient } from '@cordum/redis';
import { within } from '@cordum/testing';
import { pool, stackMetric, startStack, type Stack } from '../test/stack';
import { closeRedis, executionAudit, redisFor, submitKeyed, waitAllReady, waitTerminal } from './ha-helpers';

const JOBS = 300;
const KILL_AFTER = 100;
const CLIENT_BUDGET_MS = 60_000;
/** Budgets of the test's phases; with the stack's start (beforeAll) excluded they add up to less than jest's 300 s. */
const SUBMIT_PHASE_MS = 120_000;
const TERMINAL_PHASE_MS = 100_000;

describe('the stack on a 3-node NATS JetStream cluster, the stream leader SIGKILLed under load', () => {
  let stack: Stack;
  let redis: RedisClient;
  let nc: NatsConnection;

  beforeAll(async () => {
    stack = await startStack({ natsCluster: true, gateways: 2, schedulers: 2, workers: 2, workerEnv: { WORKER_ECHO_DELAY: '20ms' } });
    redis = redisFor(stack);
    nc = await connect({ servers: stack.natsUrls, name: 'e2e-nats-cluster' });
  }, 180_000);
  afterAll(async () => {
    await nc?.close();
    if (redis) await closeRedis(redis);
    await stack?.stop();
  });

  it(`${JOBS} keyed submits over both gateways: every key has one job, SUCCEEDED and executed once, though the stream leader died mid-run`, async () => {
    const jsm = await nc.jetstreamManager();
    const before = await jsm.streams.info('CORDUM_SYS');
    expect(before.config.num_replicas).toBe(3);
    const leader = before.cluster?.leader ?? '';
    const victim = stack.natsNodes.find((_n, i) => `n${i}` === leader);
    if (!victim) throw new Error(`no node named ${leader}`);

    let answered = 0;
    let killedAt = 0;
    const retries = new Map<string, number>(); // "status code" → count, live, for the progress lines
    const progress = (): string => {
      const since = killedAt ? `${Date.now() - killedAt} ms after the kill` : 'before the kill';
      return `${answered}/${JOBS} submits answered, retries ${JSON.stringify(Object.fromEntries(retries))}, ${since}`;
    };
    const submit = async (i: number): Promise<string> => {
      const out = await submitKeyed(stack, i, {
        key: `natsc-${i}`,
        body: { topic: 'job.echo', prompt: `natsc ${i}` },
        budgetMs: CLIENT_BUDGET_MS,
        onRetry: (status, code) => {
          const k = `${status} ${typeof code === 'string' ? code : ''}`.trim();
          retries.set(k, (retries.get(k) ?? 0) + 1);
        },
      });
      if (++answered === KILL_AFTER) {
        killedAt = Date.now();
        victim.process.kill('SIGKILL');
        // Progress lines, so a slow run says which phase it was in and what the clients saw.
        console.log(`[nats cluster] stream leader ${leader} killed after ${KILL_AFTER} answers`);
      }
      return out.jobId;
    };

    // Each phase has its own budget below jest's, so a stall fails with the phase's name and
    // progress instead of a bare test timeout (one fresh-clone CI run of 32753f8 ended that way).
    const ticker = setInterval(() => console.log(`[nats cluster] ${progress()}`), 10_000);
    let ids: string[];
    try {
      ids = await within(pool(Array.from({ length: JOBS }, (_, i) => i), 20, submit), SUBMIT_PHASE_MS, () => `submit phase over ${SUBMIT_PHASE_MS} ms: ${progress()}`);
    } finally {
      clearInterval(ticker);
    }
    expect(killedAt).toBeGreaterThan(0);
    await victim.process.waitExit(5_000);
    expect(new Set(ids).size).toBe(JOBS);
    console.log(`[nats cluster] all ${JOBS} submits answered ${Date.now() - killedAt} ms after the kill; retries ${JSON.stringify(Object.fromEntries(retries))}`);
    let final: Map<string, string | null>;
    try {
      final = await waitTerminal(redis, ids, TERMINAL_PHASE_MS, { stack });
    } finally {
      // What the delivery verifiers did with the dispatches the kill cut off (BEHAVIOURS §3).
      const outcomes = ['delivered', 'fallback', 'deferred', 'unverified', 'probe_error'];
      const counts = await Promise.all(outcomes.map(async (o) => `${o} ${await stackMetric(stack, 'scheduler-', 'cordum_dispatch_verify_total', { outcome: o })}`));
      console.log(`[nats cluster] dispatch verify outcomes: ${counts.join(', ')}`);
    }
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });
    const after = await jsm.streams.info('CORDUM_SYS');
    console.log(`[nats cluster] new leader ${after.cluster?.leader}; all ${JOBS} done ${Date.now() - killedAt} ms after the kill`);
    expect(after.cluster?.leader).not.toBe(leader);
    // Every service is still up and ready on the two nodes left.
    await waitAllReady(stack, 20_000);
  }, 300_000);
});
