// Connections a worker process needs, so an app built on the SDK never imports
// the bus or redis libs itself (module boundaries: apps → worker-sdk).
import { BusError, connectBus, type Bus, type NatsConnectOptions } from '@cordum/bus';
import { closeRedis, createRedis, pingRedis, redisLogEvents, type RedisClient, type RedisConnOptions } from '@cordum/redis';
import { sharedCheck, type Logger } from '@cordum/service-kit';
import type { Registry } from 'prom-client';

export interface WorkerRuntimeOptions {
  /** Connection name (the worker id). */
  name: string;
  /**
   * Where NATS is and how to log in: `natsConnectionConfig(env)` of @cordum/service-kit
   * (NATS_URL, NATS_USER, NATS_PASSWORD(_FILE), NATS_TOKEN(_FILE), NATS_CREDS_FILE, NATS_TLS_*, NATS_CONNECT_TIMEOUT),
   * the same options every service connects with.
   */
  nats?: NatsConnectOptions;
  /** @deprecated Servers only, without a login: use `nats`. Ignored when `nats` is given. */
  natsServers?: string[];
  redis: RedisConnOptions;
  logger: Logger;
  registry?: Registry;
}

export interface WorkerRuntime {
  readonly bus: Bus;
  readonly redis: RedisClient;
  /** NATS connected, CORDUM_SYS answers and Redis answers PING (for /readyz). */
  ready(): Promise<boolean>;
  /** Closes NATS then Redis; idempotent. */
  close(): Promise<void>;
}

export async function connectWorkerRuntime(o: WorkerRuntimeOptions): Promise<WorkerRuntime> {
  const nats = o.nats ?? (o.natsServers !== undefined ? { servers: o.natsServers } : undefined);
  if (nats === undefined) throw new BusError('bus_connect_failed', 'connectWorkerRuntime: nats is required (natsConnectionConfig(env) of @cordum/service-kit)');
  const redis = createRedis({ ...o.redis, name: o.redis.name ?? o.name, events: redisLogEvents(o.logger) });
  let bus: Bus;
  try {
    bus = await connectBus({ ...nats, name: o.name, logger: o.logger, registry: o.registry, waitOnFirstConnect: true });
    // D43: every service ensures the streams, so results land even if the worker starts first.
    await bus.ensureStreams();
  } catch (err) {
    await closeRedis(redis);
    throw err;
  }
  let closing: Promise<void> | null = null;
  // P268: probes asking at once share one stream request and one PING, for half a second.
  const dependencies = sharedCheck(async () => (await Promise.all([bus.streamAnswers(1_500), pingRedis(redis)])).every(Boolean));
  return {
    bus,
    redis,
    // P263: CORDUM_SYS must answer too (results are published to it); 1.5 s inside a health server's 2 s bound.
    ready: async () => bus.connected && (await dependencies()),
    close: () => {
      closing ??= (async () => {
        try {
          await bus.close();
        } finally {
          await closeRedis(redis);
        }
      })();
      return closing;
    },
  };
}
