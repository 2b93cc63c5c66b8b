// The whole stack on a 3-node NATS JetStream cluster (NATS_URL lists the three; the streams
// get 3 replicas): two gateways, two schedulers, two echo workers. Mid-run the node leading
// CORDUM_SYS gets SIGKILL. JetStream's replicated streams and consumers keep every stored
// message through the loss of one node, so no job may be lost or run twice: clients retry a
// submit cut off by the election with the same Idempotency-Key, as they would against a
// gateway, and executions are counted from the workers' exec logs.
import { connect, type NatsConnection } from 'nats';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { API_KEY, pool, startStack, type Stack } from '../test/stack';
import { closeRedis, executionAudit, redisFor, waitTerminal } from './ha-helpers';

const JOBS = 300;
const KILL_AFTER = 100;
const CLIENT_BUDGET_MS = 60_000;

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
    let retried = 0;
    const submit = async (i: number): Promise<string> => {
      const key = `natsc-${i}`;
      const started = Date.now();
      for (let g = i % 2; Date.now() - started < CLIENT_BUDGET_MS; g = (g + 1) % 2) {
        let status = 0;
        let body: Record<string, unknown> = {};
        try {
          const r = await fetch(`${stack.gatewayUrls[g]}/api/v1/jobs`, {
            method: 'POST',
            headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json', 'Idempotency-Key': key },
            body: JSON.stringify({ topic: 'job.echo', prompt: `natsc ${i}` }),
            signal: AbortSignal.timeout(15_000),
          });
          status = r.status;
          body = (await r.json()) as Record<string, unknown>;
        } catch {
          status = 0; // timed out: the request may or may not have taken effect; the key makes a retry safe
        }
        if (status === 200) {
          if (++answered === KILL_AFTER) {
            killedAt = Date.now();
            victim.process.kill('SIGKILL');
          }
          return String(body['job_id']);
        }
        if (status !== 0 && status !== 503 && !(status === 409 && body['code'] === 'idempotency_in_progress')) throw new Error(`${key}: unexpected ${status} ${JSON.stringify(body)}`);
        retried += 1;
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error(`${key}: no job within ${CLIENT_BUDGET_MS} ms`);
    };

    const ids = await pool(Array.from({ length: JOBS }, (_, i) => i), 20, submit);
    expect(killedAt).toBeGreaterThan(0);
    await victim.process.waitExit(5_000);
    expect(new Set(ids).size).toBe(JOBS);
    const final = await waitTerminal(redis, ids, 120_000, { stack });
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });
    const after = await jsm.streams.info('CORDUM_SYS');
    console.log(`[nats cluster] stream leader ${leader} killed after ${KILL_AFTER} answers; new leader ${after.cluster?.leader}; ${retried} submit retries; all ${JOBS} done ${Date.now() - killedAt} ms after the kill`);
    expect(after.cluster?.leader).not.toBe(leader);
    // Every service is still up and ready on the two nodes left.
    await waitFor(async () => {
      for (const [name, port] of stack.healthPorts) {
        const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null);
        if (r?.status !== 200) throw new Error(`${name} not ready`);
      }
      return true;
    }, 20_000, { message: 'every service ready' });
  }, 300_000);
});
