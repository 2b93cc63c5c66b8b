// Two (or more) in-process gateways on one redis-server + nats-server, for
// behaviours that must hold across replicas (D24 rate limits, D27 revocation,
// WebSocket fan-out). Each gateway has its own Redis and NATS connections.
import { createJobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { loadGatewayConfig } from '../src/config';
import { createGateway, type Gateway, type GatewayDeps } from '../src/gateway';
import type { EvaluateRequest, PolicyEvaluator } from '../src/safety/evaluator';
import { KEYS, call, expectEnvelope, failJobAsScheduler, gatewayTestEnv, startFakeKernel, type FakeKernel } from './harness';

export interface Replicas {
  redis: TestServer;
  nats: TestServer;
  kernel: FakeKernel;
  gateways: Gateway[];
  urls: string[];
  logs: string[];
  stop(): Promise<void>;
}

export async function startReplicas(n: number, extraEnv: Record<string, string> = {}, deps: GatewayDeps = {}): Promise<Replicas> {
  const redis = await startRedis();
  const nats = await startNats();
  const kernel = await startFakeKernel();
  const logs: string[] = [];
  const gateways: Gateway[] = [];
  for (let i = 0; i < n; i++) {
    const config = loadGatewayConfig({ ...gatewayTestEnv({ redis: redis.url, nats: nats.url, kernel: kernel.address }, `gw-${i + 1}`), ...extraEnv });
    const verbose = Boolean(process.env['CORDUM_TEST_VERBOSE']);
    const logger = createLogger({
      service: 'api-gateway',
      instance: `gw-${i + 1}`,
      level: 'info',
      write: (l) => {
        logs.push(l);
        if (verbose) process.stderr.write(l);
      },
    });
    const gw = createGateway(config, { logger, ...deps });
    await gw.start();
    gateways.push(gw);
  }
  return {
    redis,
    nats,
    kernel,
    gateways,
    urls: gateways.map((g) => `http://127.0.0.1:${g.httpPort}`),
    logs,
    stop: async () => {
      for (const g of gateways) await g.stop();
      await kernel.stop();
      await nats.stop();
      await redis.stop();
    },
  };
}

/** A policy evaluator that allows everything and can hold one Evaluate: the window between a submit's claim and its record. */
export interface HeldEvaluator {
  evaluator: PolicyEvaluator;
  /** How many Evaluates `hold` selected so far; the first of them waits for release(). */
  held(): number;
  release(): void;
}

/** The first Evaluate for which `hold(req)` is true (read at call time) waits until release(). */
export function heldEvaluator(hold: (req: EvaluateRequest) => boolean = () => true): HeldEvaluator {
  let open: () => void = () => undefined;
  const latch = new Promise<void>((resolve) => (open = resolve));
  let held = 0;
  return {
    evaluator: {
      async evaluate(req) {
        if (hold(req) && held++ === 0) await latch;
        return { kind: 'allow', decision: 'allow', reason: 'allowed', ruleId: '', policySnapshot: 'snap-test' };
      },
      close: () => undefined,
    },
    held: () => held,
    release: () => open(),
  };
}

/** `n` replicas whose Evaluates go through `hold`, and a Redis client of the test's own. */
export interface HeldReplicas {
  r: Replicas;
  redis: RedisClient;
  /** Releases the hold, closes the client, stops the replicas. */
  stop(): Promise<void>;
}

export async function startHeldReplicas(n: number, hold: HeldEvaluator): Promise<HeldReplicas> {
  const r = await startReplicas(n, {}, { evaluator: hold.evaluator });
  const redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  return {
    r,
    redis,
    stop: async () => {
      hold.release();
      await closeRedis(redis);
      await r.stop();
    },
  };
}

/** A job submitted over HTTP to `url` and then failed as a worker would (fenced), so it has a DLQ entry. */
export async function deadLetter(url: string, redis: RedisClient, topic: string): Promise<string> {
  const s = await call(url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'again', topic } });
  if (s.status !== 200) throw new Error(`submit: ${s.status}`);
  const id = String(s.body['job_id']);
  const store = createJobStore(redis, { jobTtlMs: 60_000 });
  await failJobAsScheduler(store, createLocks(redis), id);
  await waitFor(async () => (await store.getDlq(id)) !== null, 5_000, { message: 'DLQ entry written' });
  return id;
}

/**
 * P40/P56: the same request on two replicas while the winner's publish fails. `path` (with
 * `body`) goes to replica 0, which claims `claimKey` and is held in Evaluate; NATS is stopped;
 * the same request goes to replica 1, which waits on the claim; the hold is released, so the
 * winner records its job, PENDING, and its publish fails. Checks what both cases share: the
 * winner answers 503 `bus_unavailable` with its job, which ends FAILED; the waiting request is
 * no 200 with that job, but the same 503 with a job of its own; the claim is gone.
 */
export async function expectNoAnswerFromFailedWinner(h: HeldReplicas, hold: HeldEvaluator, path: string, body: unknown, claimKey: string): Promise<void> {
  const { r, redis } = h;
  const sentAt = Date.now();
  const first = call(r.urls[0]!, 'POST', path, { key: KEYS.operator, body });
  await waitFor(async () => hold.held() === 1 && (await redis.get(claimKey)) !== null, 5_000, { message: 'winner claimed, Evaluate held' });
  const winnerJob = await redis.get(claimKey);
  await r.nats.process.stop(5_000);

  const second = call(r.urls[1]!, 'POST', path, { key: KEYS.operator, body });
  // P325: the winner's Evaluate takes 1.5 s (the kernel near D19's 2 s deadline). Its record's
  // createdAt is the request's arrival (P321), so a settle window counted from it ended while the
  // publish below was still inside its budget, and the duplicate answered 200 with the job.
  await waitFor(() => Date.now() - sentAt >= 1_500, 5_000, { message: 'the winner\'s Evaluate held 1.5 s' });
  hold.release(); // the winner records its job, PENDING, and its publish fails for the 2 s budget
  const [won, dup] = await Promise.all([first, second]);

  expectEnvelope(won, 503, 'bus_unavailable');
  expect(won.body['job_id']).toBe(winnerJob);
  // Before: 200 with the winner's job, a job that ended FAILED bus_unavailable.
  expect(dup.status).not.toBe(200);
  expectEnvelope(dup, 503, 'bus_unavailable');
  expect(dup.body['job_id']).not.toBe(winnerJob);
  const g = await call(r.urls[0]!, 'GET', `/api/v1/jobs/${String(winnerJob)}`, { key: KEYS.operator });
  expect(g.body['state']).toBe('FAILED');
  expect(await redis.exists(claimKey)).toBe(0);
}
