import { createMetricsRegistry, createLogger } from '@cordum/service-kit';
import { create, decodePacket, DispatchIdentitySchema, encodePacket, JobRequestSchema, JobStatus, newPacket, type JobResult } from '@cordum/protocol';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { connectWorkerRuntime, type WorkerRuntime } from '@cordum/worker-sdk';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEchoWorker, type EchoWorker } from '../src/app';
import { loadEchoWorkerConfig } from '../src/config';

let nats: TestServer;
let redisServer: TestServer;
let observer: WorkerRuntime;
let stopConsumer: () => Promise<void>;
let echo: EchoWorker;
let dir: string;
const results = new Map<string, JobResult>();
const registry = createMetricsRegistry({ service: 'echo-worker', pod: 'test' });
const logger = createLogger({ service: 'echo-worker-test', instance: 'test', level: 'error' });

beforeAll(async () => {
  [nats, redisServer] = await Promise.all([startNats(), startRedis()]);
  dir = mkdtempSync(join(tmpdir(), 'echo-worker-test-'));
  const redis = { url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 };
  observer = await connectWorkerRuntime({ name: 'observer', nats: { servers: [nats.url] }, redis, logger });
  const consumer = await observer.bus.consume({
    subject: 'sys.job.result',
    queue: 'observer',
    decode: decodePacket,
    handler: (p) => {
      if (p.payload.case === 'jobResult') results.set(p.payload.value.jobId, p.payload.value);
      return Promise.resolve({ kind: 'ack' });
    },
  });
  stopConsumer = () => consumer.stop();
  const config = loadEchoWorkerConfig({ NATS_URL: nats.url, REDIS_URL: redisServer.url, WORKER_ID: 'echo-it', WORKER_EXEC_LOG: join(dir, 'exec.log'), WORKER_ECHO_FAULTS: 'true' });
  echo = createEchoWorker(config, { logger, registry });
  await echo.start();
});

afterAll(async () => {
  await echo.stop();
  await stopConsumer();
  await observer.close();
  await Promise.all([nats.stop(), redisServer.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function submit(prompt: string, subject = 'job.echo'): Promise<{ jobId: string; dispatchId: string }> {
  n += 1;
  const jobId = `echo-job-${n}`;
  const dispatchId = `disp-${n}`;
  await observer.redis.set(`ctx:${jobId}`, JSON.stringify({ prompt, context: { n }, topic: 'job.echo', tenant_id: 'default', priority: 'batch', created_at: new Date().toISOString() }));
  const req = create(JobRequestSchema, { jobId, topic: 'job.echo', contextPtr: `redis://ctx:${jobId}`, dispatch: create(DispatchIdentitySchema, { dispatchId, attempt: 3n }) });
  observer.bus.publishCore(subject, encodePacket(newPacket('test', { case: 'jobRequest', value: req })));
  await observer.bus.flush();
  return { jobId, dispatchId };
}

const resultOf = (jobId: string) => waitFor(() => results.get(jobId), 10_000, { message: `result of ${jobId}` });

test('echo answers SUCCEEDED with {echo, context, worker_id, attempt} at res:<id> (D39), on the topic and the direct subject', async () => {
  const a = await submit('hello');
  const r = await resultOf(a.jobId);
  expect(r).toMatchObject({ status: JobStatus.SUCCEEDED, workerId: 'echo-it', resultPtr: `redis://res:${a.jobId}` });
  expect(JSON.parse((await observer.redis.get(`res:${a.jobId}`))!)).toEqual({ echo: 'hello', context: { n: 1 }, worker_id: 'echo-it', attempt: 3 });
  const b = await submit('direct', 'worker.echo-it.jobs');
  expect((await resultOf(b.jobId)).status).toBe(JobStatus.SUCCEEDED);
  const c = await submit('default topic', 'job.default');
  expect((await resultOf(c.jobId)).status).toBe(JobStatus.SUCCEEDED);
});

// P235: the claim of a dispatch lived 7 days whatever JOB_TTL said (the SDK's default), so with a
// short JOB_TTL the claims outgrew the records they were for.
test('the dispatch claim lives JOB_TTL, not the SDK default of 7 days', async () => {
  const short = createEchoWorker(loadEchoWorkerConfig({ NATS_URL: nats.url, REDIS_URL: redisServer.url, WORKER_ID: 'echo-ttl', WORKER_TOPICS: 'job.ttl', JOB_TTL: '10m' }), { logger, registry: createMetricsRegistry({ service: 'echo-worker', pod: 'ttl' }) });
  await short.start();
  try {
    const j = await submit('short-lived', 'job.ttl');
    expect((await resultOf(j.jobId)).status).toBe(JobStatus.SUCCEEDED);
    const ttl = await observer.redis.pttl(`worker:claim:{${j.jobId}}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(600_000);
  } finally {
    await short.stop();
  }
});

test('by default (WORKER_ECHO_FAULTS unset) a fail: or retry: prompt is echoed SUCCEEDED like any other (D39, P183)', async () => {
  const plain = createEchoWorker(loadEchoWorkerConfig({ NATS_URL: nats.url, REDIS_URL: redisServer.url, WORKER_ID: 'echo-plain', WORKER_TOPICS: 'job.plain' }), { logger, registry: createMetricsRegistry({ service: 'echo-worker', pod: 'plain' }) });
  await plain.start();
  try {
    const f = await submit('fail: on purpose', 'job.plain');
    expect(await resultOf(f.jobId)).toMatchObject({ status: JobStatus.SUCCEEDED, workerId: 'echo-plain' });
    expect(JSON.parse((await observer.redis.get(`res:${f.jobId}`))!)).toMatchObject({ echo: 'fail: on purpose' });
    const r = await submit('retry: later', 'job.plain');
    expect((await resultOf(r.jobId)).status).toBe(JobStatus.SUCCEEDED);
  } finally {
    await plain.stop();
  }
});

test('with WORKER_ECHO_FAULTS=true, fail: and retry: prompts drive FAILED echo_failed and FAILED_RETRYABLE echo_retry', async () => {
  const f = await submit('fail: on purpose');
  expect(await resultOf(f.jobId)).toMatchObject({ status: JobStatus.FAILED, errorCode: 'echo_failed', errorMessage: 'on purpose' });
  const r = await submit('retry: later');
  expect(await resultOf(r.jobId)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'echo_retry' });
});

test('every execution appends one exec-log line and counts cordum_worker_executions_total', async () => {
  const j = await submit('logged');
  await resultOf(j.jobId);
  const lines = readFileSync(join(dir, 'exec.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines.filter((l) => l['job_id'] === j.jobId)).toEqual([{ job_id: j.jobId, dispatch_id: j.dispatchId, attempt: 3, worker_id: 'echo-it', ts: expect.any(Number) }]);
  const metric = await registry.getSingleMetricAsString('cordum_worker_executions_total');
  const total = [...metric.matchAll(/^cordum_worker_executions_total\{[^}]*\} (\d+)$/gm)].reduce((s, m) => s + Number(m[1]), 0);
  expect(total).toBe(lines.length);
});

test('stop() is idempotent and closes its connections', async () => {
  const other = createEchoWorker(loadEchoWorkerConfig({ NATS_URL: nats.url, REDIS_URL: redisServer.url, WORKER_ID: 'echo-2', WORKER_TOPICS: 'job.other' }), { logger, registry: createMetricsRegistry({ service: 'echo-worker', pod: 'b' }) });
  await other.start();
  expect(other.runtime?.bus.connected).toBe(true);
  await Promise.all([other.stop(), other.stop()]);
  await other.stop();
  expect(other.runtime?.bus.connected).toBe(false);
  expect(other.runtime?.redis.status).toBe('end');
});
