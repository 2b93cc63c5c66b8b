// Engineer-B slice of the composition root: the job actions, DLQ, workers,
// pools/topics, config and status routes, the audit sink and the DLQ cleanup
// leader. gateway.ts builds it after Redis/NATS and mounts its routes.
import type { Bus } from '@cordum/bus';
import { createConfigStore } from '@cordum/config-overlay';
import type { JobStore } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import type { GatewayConfig } from './config';
import type { Mount } from './http/app';
import { createAuditSink, type AuditSink } from './audit/sink';
import { createRetentionCleanup, type RetentionCleanup } from './retention';
import { createDlqRetrier } from './dlq/retry';
import { packetEncoder } from '@cordum/protocol';
import { mountJobActionRoutes } from './routes/job-actions';
import { mountDlqRoutes } from './routes/dlq';
import { mountWorkerRoutes } from './routes/workers';
import { mountConfigRoutes } from './routes/config';
import { mountStatusRoute } from './routes/status';
import type { SubmitService } from './submit/service';
import { createWorkerSnapshotSource } from './workers/snapshot';

export const BUILD_VERSION = '0.1.0';

export interface Operations {
  readonly audit: AuditSink;
  readonly retention: RetentionCleanup;
  mount(mount: Mount): void;
  start(): void;
  stop(): Promise<void>;
}

export function createOperations(o: {
  config: GatewayConfig;
  redis: RedisClient;
  bus: Bus;
  store: JobStore;
  locks: Locks;
  submit: SubmitService;
  logger: Logger;
  redisReady(): boolean;
}): Operations {
  const { config, redis, bus, store, locks, logger } = o;
  const instanceId = config.instanceId;
  const audit = createAuditSink({ transport: config.audit.transport, bufferSize: config.audit.bufferSize, bus, instanceId, logger });
  const configStore = createConfigStore(redis);
  const workers = createWorkerSnapshotSource(redis);
  const retention = createRetentionCleanup({ redis, locks, logger, instanceId, intervalMs: config.dlqCleanupIntervalMs, jobTtlMs: config.jobTtlMs, dlqTtlMs: config.dlqTtlMs });
  const retrier = createDlqRetrier({ redis, store, submit: o.submit, logger, dlqTtlMs: config.dlqTtlMs });
  const startedAt = Date.now();
  return {
    audit,
    retention,
    mount(mount) {
      mountJobActionRoutes(mount, { redis, store, locks, bus, audit, logger, instanceId, redisReady: o.redisReady, encodeForWorkers: packetEncoder(config.capSigningKey) });
      mountDlqRoutes(mount, { redis, store, retrier, audit, redisReady: o.redisReady });
      mountWorkerRoutes(mount, { workers, config: configStore, redisReady: o.redisReady });
      mountConfigRoutes(mount, { config: configStore, bus, audit, logger, instanceId, redisReady: o.redisReady, deploymentTenant: config.deploymentTenant });
      mountStatusRoute(mount, { instanceId, redis, natsConnected: () => bus.connected, workers, startedAt, version: BUILD_VERSION });
    },
    start() {
      retention.start();
    },
    async stop() {
      await retention.stop();
      await audit.flush();
    },
  };
}
