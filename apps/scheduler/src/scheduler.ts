// Composition root: builds the graph, exposes start()/stop() (STYLE 2, 3, 4).
import { connectBus, subjects, type Bus, type Consumer, type Subscription } from '@cordum/bus';
import { createJobStore, type JobRecord, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { decodePacket, encodePacket } from '@cordum/protocol';
import { closeRedis, createRedis, pingRedis, type RedisClient } from '@cordum/redis';
import { startHealthServer, type HealthServer, type Service, type ServiceDeps } from '@cordum/service-kit';
import type { SchedulerConfig } from './config';
import type { SchedulerContext } from './context';
import { submitHandler } from './intake';
import { createSchedulerMetrics, LOCK_WAIT_HISTOGRAM } from './metrics';
import { statePacket } from './packets';
import { progressListener } from './progress';
import { WorkerRegistry } from './registry';
import { resultHandler } from './results';
import { grpcSafetyChecker, type SafetyChecker } from './safety';
import { subscribeWorkers } from './workers-feed';

export const QUEUE = 'cordum-scheduler';

export type SchedulerDeps = Pick<ServiceDeps, 'logger' | 'instanceId' | 'registry'> & {
  /** Replaces the gRPC Check client (tests, or a future breaker wrapper). */
  safety?: SafetyChecker;
};

export interface Scheduler extends Service {
  /** The bound health port (useful when SCHEDULER_HTTP_ADDR is :0). */
  readonly httpPort: number;
  readonly workers: WorkerRegistry;
}

type Phase = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

export function createScheduler(config: SchedulerConfig, deps: SchedulerDeps): Scheduler {
  const { logger, instanceId, registry } = deps;
  const metrics = createSchedulerMetrics(registry);
  const workers = new WorkerRegistry({ ttlMs: config.workerTtlMs });
  let phase: Phase = 'idle';
  let stopPromise: Promise<void> | undefined;

  let health: HealthServer | undefined;
  let redis: RedisClient | undefined;
  let bus: Bus | undefined;
  let safety: SafetyChecker | undefined;
  const consumers: Consumer[] = [];
  const subs: Subscription[] = [];
  const progressInflight = new Set<Promise<void>>();
  let consumersBound = false;

  // D15: every committed transition is broadcast on sys.job.state (core NATS).
  const onTransition = (job: JobRecord): void => {
    metrics.jobsTotal.inc({ state: job.state });
    if (!bus?.connected) return;
    try {
      bus.publishCore(subjects.state, encodePacket(statePacket(instanceId, job)));
    } catch (err) {
      logger.debug('state broadcast failed', { job_id: job.id, err });
    }
  };

  async function start(): Promise<void> {
    if (phase !== 'idle') throw new Error(`scheduler.start() in phase ${phase}`);
    phase = 'starting';
    logger.info('scheduler config', { pools: config.poolsSource, timeouts: config.timeoutsSource, topics: Object.keys(config.pools.topics) });
    health = await startHealthServer({
      addr: config.httpAddr,
      registry,
      logger,
      checks: [
        { name: 'redis', check: () => (redis ? pingRedis(redis, 1000) : false) },
        { name: 'nats', check: () => bus?.connected === true },
        { name: 'consumers', check: () => consumersBound && phase === 'running' },
      ],
    });
    redis = createRedis({ ...config.redis, name: `scheduler:${instanceId}` });
    const store: JobStore = createJobStore(redis, { jobTtlMs: config.jobTtlMs, onTransition });
    const locks = createLocks(redis, { metrics: registry, histogramName: LOCK_WAIT_HISTOGRAM });
    bus = await connectBus({ servers: config.natsServers, name: `scheduler:${instanceId}`, logger, registry });
    await bus.ensureStreams();
    safety = deps.safety ?? grpcSafetyChecker(config.safetyKernelAddr, config.safetyDeadlineMs);

    const pools = config.pools;
    const ctx: SchedulerContext = { config, instanceId, logger, store, locks, bus, workers, safety, metrics, pools: () => pools };

    subs.push(...subscribeWorkers(ctx));
    subs.push(bus.subscribe(subjects.progress, progressListener(ctx, progressInflight), { queue: QUEUE }));
    consumers.push(
      await bus.consume({ subject: subjects.result, queue: QUEUE, decode: decodePacket, handler: resultHandler(ctx) }),
      await bus.consume({ subject: subjects.submit, queue: QUEUE, decode: decodePacket, handler: submitHandler(ctx) }),
    );
    consumersBound = true;
    // stop() may have been called while we were starting; the union guards it.
    if ((phase as Phase) === 'starting') phase = 'running';
    logger.info('scheduler ready', { http_port: health.port });
  }

  async function doStop(): Promise<void> {
    phase = 'stopping';
    const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        logger.warn('scheduler stop step failed', { step: name, err });
      }
    };
    consumersBound = false;
    // Stop pulling first; Consumer.stop waits for in-flight handlers, which release their job locks.
    await step('consumers', () => Promise.all(consumers.map((c) => c.stop())).then(() => undefined));
    await step('subscriptions', () => subs.forEach((s) => s.unsubscribe()));
    await step('progress drain', () => Promise.allSettled([...progressInflight]).then(() => undefined));
    await step('safety client', () => safety?.close());
    await step('bus', () => bus?.close());
    await step('redis', () => (redis ? closeRedis(redis) : undefined));
    await step('health', () => health?.close());
    phase = 'stopped';
  }

  return {
    start,
    stop(): Promise<void> {
      stopPromise ??= doStop();
      return stopPromise;
    },
    get httpPort(): number {
      return health?.port ?? 0;
    },
    workers,
  };
}
