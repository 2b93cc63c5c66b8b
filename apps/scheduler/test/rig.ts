// One in-process scheduler against its own Redis and NATS, with a test bus client:
// the common set-up of the *.int suites. Each suite brings its own kernel and workers.
import { join } from 'node:path';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { createJobStore, jobKeys, type ApprovalRecord, type JobRecord, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { create, decodePacket, encodePacket, JobRequestSchema, newPacket, type DispatchIdentity, type JobCancel } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger, type Logger } from '@cordum/service-kit';
import { repoRoot, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Registry, type Histogram } from 'prom-client';
import { loadSchedulerConfig, type SchedulerConfig } from '../src/config';
import { createScheduler, type Scheduler, type SchedulerDeps } from '../src/scheduler';
import { quietLog, startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';

export interface SchedulerRig {
  redisServer: TestServer;
  natsServer: TestServer;
  redis: RedisClient;
  store: JobStore;
  /** A test client on the scheduler's NATS. */
  bus: Bus;
  scheduler: Scheduler;
  config: SchedulerConfig;
  metrics: Registry;
  /** A job created as the gateway creates it (PENDING, tenant acme) and its submit published. */
  submit(id: string, topic: string, labels?: Record<string, string>): Promise<JobRecord>;
  /** Publishes `job`'s submit with the msg id of approval `revision` (0: the gateway's first). */
  publishSubmit(job: JobRecord, revision?: number): Promise<void>;
  /**
   * What the gateway's approve route does: under the job lock, APPROVAL_REQUIRED → PENDING with
   * `approval`, then the submit again (msg id of the approval's revision). Throws when the write is refused.
   */
  approve(job: JobRecord, approval: ApprovalRecord): Promise<void>;
  /** The job's record; throws when there is none. */
  job(id: string): Promise<JobRecord>;
  /** The sum of a counter's series whose labels include `labels`. */
  counter(name: string, labels?: Record<string, string>): Promise<number>;
  /** A histogram's sample count and sum (its one unlabelled series). */
  histogram(name: string): Promise<{ count: number; sum: number }>;
  /** Stops the scheduler, the bus client, the Redis client and both servers. */
  stop(): Promise<void>;
}

/**
 * Starts Redis, NATS and a scheduler (`createScheduler`, started) with the repository's
 * pools.yaml and timeouts.yaml, JOB_TTL 1h, the kernel at `kernelAddress`; `env` adds or
 * overrides scheduler env vars.
 */
export async function startSchedulerRig(o: {
  instanceId: string;
  kernelAddress: string;
  env?: Record<string, string>;
  deps?: Pick<SchedulerDeps, 'wrapStore'>;
  /** Runs against the rig's Redis before the scheduler starts (seed a stored config, say). */
  beforeStart?: (redis: RedisClient) => Promise<void>;
  /** The scheduler's logger (default: errors only, to stdout). */
  logger?: Logger;
  /** Settings with no env var, over what the env gives (a longer Check deadline, say). */
  config?: Partial<SchedulerConfig>;
}): Promise<SchedulerRig> {
  const [redisServer, natsServer] = await Promise.all([startRedis(), startNats()]);
  const redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  const parts: { scheduler?: Scheduler; bus?: Bus } = {};
  const stop = async (): Promise<void> => {
    await parts.scheduler?.stop();
    await parts.bus?.close();
    await closeRedis(redis);
    await Promise.all([redisServer.stop(), natsServer.stop()]);
  };
  try {
    const loaded = loadSchedulerConfig({
      REDIS_URL: redisServer.url,
      NATS_URL: natsServer.url,
      SCHEDULER_HTTP_ADDR: '127.0.0.1:0',
      SAFETY_KERNEL_ADDR: o.kernelAddress,
      POOL_CONFIG_PATH: join(repoRoot, 'config', 'pools.yaml'),
      TIMEOUT_CONFIG_PATH: join(repoRoot, 'config', 'timeouts.yaml'),
      JOB_TTL: '1h',
      ...o.env,
    });
    const config: SchedulerConfig = { ...loaded, ...o.config };
    await o.beforeStart?.(redis);
    const metrics = new Registry();
    const scheduler = createScheduler(config, { logger: o.logger ?? createLogger({ service: 'scheduler', instance: o.instanceId, level: 'error' }), instanceId: o.instanceId, registry: metrics, ...o.deps });
    parts.scheduler = scheduler;
    await scheduler.start();
    const bus = await connectBus({ servers: [natsServer.url], name: 'test-client', logger: quietLog });
    parts.bus = bus;
    const store = createJobStore(redis, { jobTtlMs: 3_600_000 });
    const publishSubmit = async (job: JobRecord, revision = 0): Promise<void> => {
      const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
      await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${job.id}:0:${revision}` });
    };
    const submit = async (id: string, topic: string, labels: Record<string, string> = {}): Promise<JobRecord> => {
      const job = await store.createJob({ id, tenant: 'acme', topic, traceId: `t-${id}`, priority: 'batch', labels, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
      await publishSubmit(job);
      return job;
    };
    const locks = createLocks(redis);
    const approve = async (job: JobRecord, approval: ApprovalRecord): Promise<void> => {
      const lease = await locks.acquire({ key: jobKeys.lock(job.id), fenceKey: jobKeys.fence(job.id), ttlMs: 10_000, owner: 'gw', waitMs: 2_000 });
      if (!lease) throw new Error(`job ${job.id} lock busy`);
      const r = await store.transition(job.id, 'PENDING', { token: lease.token, from: ['APPROVAL_REQUIRED'], patch: { approval } }).finally(() => lease.release());
      if (!r.ok) throw new Error(`approval of ${job.id} refused: ${r.reason}`);
      await publishSubmit(job, approval.revision);
    };
    const job = async (id: string): Promise<JobRecord> => {
      const j = await store.getJob(id);
      if (!j) throw new Error(`no job ${id}`);
      return j;
    };
    const counter = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
      const m = await metrics.getSingleMetric(name)?.get();
      return m?.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((a, v) => a + v.value, 0) ?? 0;
    };
    const histogram = async (name: string): Promise<{ count: number; sum: number }> => {
      const values = (await (metrics.getSingleMetric(name) as Histogram | undefined)?.get())?.values ?? [];
      const of = (suffix: string): number => values.find((v) => v.metricName === `${name}_${suffix}`)?.value ?? 0;
      return { count: of('count'), sum: of('sum') };
    };
    return { redisServer, natsServer, redis, store, bus, scheduler, config, metrics, submit, publishSubmit, approve, job, counter, histogram, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A JobCancel heard on sys.job.cancel, and when. */
export interface HeardCancel {
  cancel: JobCancel;
  at: number;
}

/** Every JobCancel on sys.job.cancel from now on, as a worker's core subscription hears it; `stop` unsubscribes. */
export function listenForCancels(bus: Bus): { heard: HeardCancel[]; stop(): void } {
  const heard: HeardCancel[] = [];
  const sub = bus.subscribe(subjects.cancel, (data) => {
    const p = decodePacket(data);
    if (p.payload.case === 'jobCancel') heard.push({ cancel: p.payload.value, at: Date.now() });
  });
  return { heard, stop: () => sub.unsubscribe() };
}

/** Job `id` submitted as the gateway does, once `worker` has started it (RUNNING), with the attempt it runs. */
export async function startedJob(rig: SchedulerRig, worker: TestWorker, id: string, topic: string): Promise<{ id: string; dispatch: DispatchIdentity }> {
  await rig.submit(id, topic);
  await waitFor(async () => (await rig.job(id)).state === 'RUNNING', 10_000, { message: `${id} RUNNING` });
  const dispatch = worker.executions.get(id)?.[0]?.request.dispatch;
  if (!dispatch) throw new Error(`no dispatch for ${id}`);
  return { id, dispatch };
}

/** A test worker on `topic` that starts each job (its start ack) and then sends nothing about it, once the scheduler routes to it. */
export async function startSilentRunner(rig: SchedulerRig, id: string, topic: string): Promise<TestWorker> {
  const worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id, topics: [topic], replyFor: () => 'none' });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === id && v.readyTopics.length > 0), 10_000, { message: `worker ${id} registered` });
  return worker;
}

/** A test kernel, a scheduler rig on it and one silent runner (startRunnerRig). */
export interface RunnerRig {
  kernel: TestKernel;
  rig: SchedulerRig;
  worker: TestWorker;
  /** Stops the runner, the rig and the kernel, in that order. */
  stop(): Promise<void>;
}

/**
 * The set-up of the suites that drive one worker's jobs by hand: a test kernel answering by
 * `policy`, a rig on it (`instanceId`, `env`, `deps` as startSchedulerRig takes them) and a silent
 * runner `workerId` on `topic`, registered with the scheduler.
 */
export async function startRunnerRig(o: {
  policy: Parameters<typeof startTestKernel>[0];
  instanceId: string;
  env?: Record<string, string>;
  deps?: Pick<SchedulerDeps, 'wrapStore'>;
  workerId: string;
  topic: string;
  /** The scheduler's logger, as startSchedulerRig takes it. */
  logger?: Logger;
}): Promise<RunnerRig> {
  const kernel = await startTestKernel(o.policy);
  const parts: { rig?: SchedulerRig; worker?: TestWorker } = {};
  const stop = async (): Promise<void> => {
    await parts.worker?.stop();
    await parts.rig?.stop();
    await kernel.stop();
  };
  try {
    const rig = (parts.rig = await startSchedulerRig({ instanceId: o.instanceId, kernelAddress: kernel.address, env: o.env, deps: o.deps, logger: o.logger }));
    const worker = (parts.worker = await startSilentRunner(rig, o.workerId, o.topic));
    return { kernel, rig, worker, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
