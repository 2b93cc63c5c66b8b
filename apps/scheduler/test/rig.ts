// One in-process scheduler against its own Redis and NATS, with a test bus client:
// the common set-up of the *.int suites. Each suite brings its own kernel and workers.
import { join } from 'node:path';
import { connectBus, type Bus } from '@cordum/bus';
import { createJobStore, type JobStore } from '@cordum/job-store';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { repoRoot, startNats, startRedis, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { loadSchedulerConfig, type SchedulerConfig } from '../src/config';
import { createScheduler, type Scheduler, type SchedulerDeps } from '../src/scheduler';
import { quietLog } from './harness';

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
  /** Stops the scheduler, the bus client, the Redis client and both servers. */
  stop(): Promise<void>;
}

/**
 * Starts Redis, NATS and a scheduler (`createScheduler`, started) with the repository's
 * pools.yaml and timeouts.yaml, JOB_TTL 1h, the kernel at `kernelAddress`; `env` adds or
 * overrides scheduler env vars.
 */
export async function startSchedulerRig(o: { instanceId: string; kernelAddress: string; env?: Record<string, string>; deps?: Pick<SchedulerDeps, 'wrapStore'> }): Promise<SchedulerRig> {
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
    const config = loadSchedulerConfig({
      REDIS_URL: redisServer.url,
      NATS_URL: natsServer.url,
      SCHEDULER_HTTP_ADDR: '127.0.0.1:0',
      SAFETY_KERNEL_ADDR: o.kernelAddress,
      POOL_CONFIG_PATH: join(repoRoot, 'config', 'pools.yaml'),
      TIMEOUT_CONFIG_PATH: join(repoRoot, 'config', 'timeouts.yaml'),
      JOB_TTL: '1h',
      ...o.env,
    });
    const metrics = new Registry();
    const scheduler = createScheduler(config, { logger: createLogger({ service: 'scheduler', instance: o.instanceId, level: 'error' }), instanceId: o.instanceId, registry: metrics, ...o.deps });
    parts.scheduler = scheduler;
    await scheduler.start();
    const bus = await connectBus({ servers: [natsServer.url], name: 'test-client', logger: quietLog });
    parts.bus = bus;
    return { redisServer, natsServer, redis, store: createJobStore(redis, { jobTtlMs: 3_600_000 }), bus, scheduler, config, metrics, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
