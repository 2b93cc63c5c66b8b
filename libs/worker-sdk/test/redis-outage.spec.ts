// A worker and its Redis: it waits for Redis at start instead of taking jobs it can only hand back,
// says draining in its heartbeats while Redis is away (schedulers route nothing to it), and words
// the answers it must give meanwhile as "cannot reach Redis", not ioredis's option text.
// The worker's Redis is a server of its own, stopped and restarted by the tests.
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { JobStatus, WORKER_DRAINING_LABEL } from '@cordum/protocol';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { createWorker, type Worker, type WorkerOptions } from '../src';
import { captureLog, onlyResult, publishJob, startHarness, type Harness } from './harness';

let h: Harness;
let server: TestServer;
let client: RedisClient;
const workers: Worker[] = [];
let seq = 0;

beforeAll(async () => {
  h = await startHarness();
});

beforeEach(async () => {
  server = await startRedis();
  client = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
});

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  await closeRedis(client);
  await server.stop();
});

afterAll(async () => {
  await h.close();
});

const capture = () => captureLog('info');

function worker(over: Partial<WorkerOptions> = {}): { w: Worker; topic: string } {
  seq += 1;
  const topic = `job.outage${seq}`;
  const w = createWorker({
    workerId: `wr${seq}-${process.pid}`, pool: 'default', topics: [topic], bus: h.bus, redis: client, logger: h.logger, maxParallelJobs: 4,
    heartbeatIntervalMs: 100, handler: () => Promise.resolve({ status: 'SUCCEEDED', result: { ok: true } }), ...over,
  });
  workers.push(w);
  return { w, topic };
}

const resultOf = (jobId: string, ms = 10_000) => waitFor(() => onlyResult(h, jobId), ms, { message: `result of ${jobId}` });

test('start() waits for Redis, saying so, and subscribes nothing meanwhile; once Redis answers it starts and runs jobs', async () => {
  await server.process.stop(5_000);
  const { logger, lines } = capture();
  const { w, topic } = worker({ logger });
  let started = false;
  const starting = w.start().then(() => (started = true));
  const waiting = await waitFor(() => lines.find((l) => l.msg === 'worker: Redis not reachable at start, waiting for it'), 8_000, { message: 'the waiting line' });
  expect(waiting).toMatchObject({ level: 'warn', worker_id: w.workerId });
  expect(waiting.err).toMatch(new RegExp(`^worker ${w.workerId} cannot reach Redis: `));
  expect(waiting.err).not.toMatch(/maxRetriesPerRequest|max retries per request/);
  expect(started).toBe(false);
  // Nothing on the bus: a job sent now reaches no subscriber (the scheduler would keep it PENDING).
  const early = await publishJob(h, topic, { withCtx: false });
  expect(h.heartbeats.some((b) => b.workerId === w.workerId)).toBe(false);
  expect(h.handshakes.some((x) => x.componentId === w.workerId)).toBe(false);
  server = await server.restart();
  await waitFor(() => started, 10_000, { message: 'start() resolved once Redis is back' });
  expect(lines.find((l) => l.msg === 'worker: Redis reachable, starting')).toMatchObject({ level: 'info' });
  expect(onlyResult(h, early.jobId)).toBeUndefined();
  expect(w.stats()).toMatchObject({ retryable: 0, redisUnavailable: 0 });
  const job = await publishJob(h, topic, { withCtx: false });
  expect((await resultOf(job.jobId)).status).toBe(JobStatus.SUCCEEDED);
  await starting;
});

test('stop() while start() waits for Redis ends the wait: start() resolves, nothing was subscribed', async () => {
  await server.process.stop(5_000);
  const { w } = worker();
  const starting = w.start();
  await new Promise((r) => setTimeout(r, 300));
  await w.stop();
  await expect(starting).resolves.toBeUndefined();
  expect(h.handshakes.some((x) => x.componentId === w.workerId)).toBe(false);
});

test('a worker that loses Redis heartbeats draining, answers "cannot reach Redis" (counted), and takes jobs again once it is back', async () => {
  const { logger, lines } = capture();
  const registry = new Registry();
  const { w, topic } = worker({ logger, registry });
  await w.start();
  const first = await publishJob(h, topic, { withCtx: false });
  expect((await resultOf(first.jobId)).status).toBe(JobStatus.SUCCEEDED);
  expect(h.heartbeats.filter((b) => b.workerId === w.workerId).every((b) => b.labels[WORKER_DRAINING_LABEL] === undefined)).toBe(true);

  await server.process.stop(5_000);
  const draining = await waitFor(() => h.heartbeats.find((b) => b.workerId === w.workerId && b.labels[WORKER_DRAINING_LABEL] === 'true'), 8_000, { message: 'a draining heartbeat' });
  expect(draining.pool).toBe('default');
  const lost = lines.find((l) => l.msg === 'worker cannot reach Redis; heartbeats say draining until it answers');
  expect(lost).toMatchObject({ level: 'error' });
  expect(lost!.err).toMatch(new RegExp(`^worker ${w.workerId} cannot reach Redis: `));

  // A scheduler that has not seen the draining heartbeat yet may still send one: it is answered, readably.
  const during = await publishJob(h, topic, { withCtx: false });
  const r = await resultOf(during.jobId);
  expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED_RETRYABLE, code: 'worker_redis_unavailable' });
  expect(r.errorMessage).toMatch(new RegExp(`^worker ${w.workerId} cannot reach Redis: `));
  expect(r.errorMessage).not.toMatch(/maxRetriesPerRequest|max retries per request/);
  expect(w.stats()).toMatchObject({ redisUnavailable: 1, retryable: 1, succeeded: 1 });
  expect(await registry.getSingleMetricAsString('cordum_worker_jobs_total')).toMatch(/status="FAILED_RETRYABLE"} 1/);

  server = await server.restart();
  const beatsAt = h.heartbeats.length;
  await waitFor(() => h.heartbeats.slice(beatsAt).find((b) => b.workerId === w.workerId && b.labels[WORKER_DRAINING_LABEL] === undefined), 10_000, { message: 'a heartbeat without the draining label' });
  expect(lines.find((l) => l.msg === 'worker reaches Redis again; taking jobs')).toMatchObject({ level: 'info' });
  const after = await publishJob(h, topic, { withCtx: false });
  expect((await resultOf(after.jobId)).status).toBe(JobStatus.SUCCEEDED);
});
