import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { createJobStore, type JobRecord, type JobStore } from '@cordum/job-store';
import { create, encodePacket, JobRequestSchema, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { repoRoot, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { loadSchedulerConfig } from '../src/config';
import { createScheduler, type Scheduler } from '../src/scheduler';
import { quietLog, startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';

// P101: a result that reaches the scheduler while Redis is down used to be NAKed on every try,
// and the 20 deliveries of D8 were gone in about 95 s: JetStream dropped it, and the job that had
// succeeded ended TIMEOUT once Redis was back. The scheduler now holds it in process (no delivery
// spent) until Redis answers. Here the outage is short; what is measured is that the result's
// message was never redelivered while it lasted.

let redisServer: TestServer;
let natsServer: TestServer;
let redis: RedisClient;
let store: JobStore;
let bus: Bus;
let kernel: TestKernel;
let scheduler: Scheduler;
let worker: TestWorker;
const registry = new Registry();
const tmp = mkdtempSync(join(tmpdir(), 'outage-hold-'));

async function counter(name: string, subject: string): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => v.labels['subject'] === subject)?.value ?? 0;
}

beforeAll(async () => {
  [redisServer, natsServer] = await Promise.all([startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] }), startNats()]);
  redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  store = createJobStore(redis, { jobTtlMs: 3_600_000 });
  kernel = await startTestKernel([]);
  const timeouts = join(tmp, 'timeouts.yaml');
  writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 60\n  running_timeout_seconds: 120\n  scan_interval_seconds: 1\n');
  const config = loadSchedulerConfig({
    REDIS_URL: redisServer.url, NATS_URL: natsServer.url, SCHEDULER_HTTP_ADDR: '127.0.0.1:0', SAFETY_KERNEL_ADDR: kernel.address,
    POOL_CONFIG_PATH: join(repoRoot, 'config', 'pools.yaml'), TIMEOUT_CONFIG_PATH: timeouts, JOB_TTL: '1h',
  });
  scheduler = createScheduler(config, { logger: createLogger({ service: 'scheduler', instance: 'outage-hold', level: 'error', write: () => undefined }), instanceId: 'outage-hold', registry });
  await scheduler.start();
  bus = await connectBus({ servers: [natsServer.url], name: 'outage-hold', logger: quietLog });
  worker = await startTestWorker({ natsUrl: natsServer.url, redis, id: 'w1', topics: ['job.echo'], replyFor: () => 'none' });
});

afterAll(async () => {
  await worker?.stop();
  await scheduler?.stop();
  await bus?.close();
  await closeRedis(redis);
  await kernel?.stop();
  await Promise.all([redisServer?.stop(), natsServer?.stop()]);
  rmSync(tmp, { recursive: true, force: true });
});

/** A job `id` submitted and RUNNING on the test worker, with its output stored at res:<id>. */
async function runningJob(id: string): Promise<JobRecord> {
  const job = await store.createJob({ id, tenant: 'acme', topic: 'job.echo', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
  const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
  await bus.publish(subjects.submit, encodePacket(newPacket('gw', { case: 'jobRequest', value: req }, `t-${id}`)), { msgId: `jobreq:${id}:0:0` });
  await waitFor(async () => (await store.getJob(job.id))?.state === 'RUNNING', 20_000, { message: 'the job runs' });
  await redis.set(`res:${id}`, JSON.stringify({ echo: 'done' }));
  return (await store.getJob(job.id))!;
}

/** The worker's SUCCEEDED result for the running attempt of `running`. */
async function publishSucceeded(running: JobRecord): Promise<void> {
  const result = create(JobResultSchema, {
    jobId: running.id, status: JobStatus.SUCCEEDED, workerId: 'w1', resultPtr: `redis://res:${running.id}`,
    dispatch: { dispatchId: running.dispatch!.dispatchId, attempt: BigInt(running.dispatch!.attempt), assignedWorkerId: 'w1' },
  });
  await bus.publish(subjects.result, encodePacket(newPacket('w1', { case: 'jobResult', value: result })), { msgId: `sys.job.result:${running.id}:${running.dispatch!.dispatchId}` });
}

it('a result published while Redis is down is held, not redelivered, and applied once Redis is back', async () => {
  const running = await runningJob('hold-1');
  const redeliveredBefore = await counter('cordum_bus_redeliveries_total', subjects.result);

  redisServer.process.kill('SIGKILL');
  await redisServer.process.waitExit(5_000);
  await publishSucceeded(running);
  // Redis stays down across several tries of the D8 backoff (0.1, 0.5, 1, 2, 5 s).
  await waitFor(async () => (await counter('cordum_bus_held_total', subjects.result)) >= 1, 10_000, { message: 'the result is held' });
  const heldAt = Date.now();
  await waitFor(() => Date.now() - heldAt >= 4_000, 10_000, { intervalMs: 250 });
  redisServer = await redisServer.restart();

  await waitFor(async () => (await store.getJob(running.id).catch(() => null))?.state === 'SUCCEEDED', 30_000, { message: 'the result is applied', intervalMs: 250 });
  expect(await counter('cordum_bus_redeliveries_total', subjects.result)).toBe(redeliveredBefore);
  expect(await counter('cordum_bus_handler_errors_total', subjects.result)).toBe(0);
});

it('a result that meets a Redis refusing writes (maxmemory under noeviction) is held, not redelivered, and applied once it accepts them again (P277)', async () => {
  // Before P277 the OOM refusal was a plain error: NAKed with the D8 backoff, 20 deliveries in about 95 s.
  const running = await runningJob('hold-2');
  const redeliveredBefore = await counter('cordum_bus_redeliveries_total', subjects.result);
  const heldBefore = await counter('cordum_bus_held_total', subjects.result);
  const errorsBefore = await counter('cordum_bus_handler_errors_total', subjects.result);

  await redis.config('SET', 'maxmemory-policy', 'noeviction');
  await redis.config('SET', 'maxmemory', '1');
  try {
    await publishSucceeded(running);
    await waitFor(async () => (await counter('cordum_bus_held_total', subjects.result)) > heldBefore, 10_000, { message: 'the result is held' });
    const heldAt = Date.now();
    await waitFor(() => Date.now() - heldAt >= 4_000, 10_000, { intervalMs: 250 });
  } finally {
    await redis.config('SET', 'maxmemory', '0');
  }
  await waitFor(async () => (await store.getJob(running.id))?.state === 'SUCCEEDED', 30_000, { message: 'the result is applied', intervalMs: 250 });
  expect(await counter('cordum_bus_redeliveries_total', subjects.result)).toBe(redeliveredBefore);
  expect(await counter('cordum_bus_handler_errors_total', subjects.result)).toBe(errorsBefore);
});
