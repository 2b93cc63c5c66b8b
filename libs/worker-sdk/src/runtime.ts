// Connections a worker process needs, so an app built on the SDK never imports
// the bus or redis libs itself (module boundaries: apps → worker-sdk).
import { BusError, connectBus, type Bus, type NatsConnectOptions } from '@cordum/bus';
import { closeRedis, createRedis, pingRedis, redisLogEvents, type RedisClient, type RedisConnOptions } from '@cordum/redis';
import { sharedCheck, type Logger, type ReadinessCheck } from '@cordum/service-kit';
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
  /**
   * The same, as named checks for a health server (P316): `nats`, `jetstream`, `redis`, so a 503
   * `/readyz` and the `not ready` line say which one fails, as the services' do.
   */
  readonly checks: ReadinessCheck[];
  /** Closes NATS then Redis; idempotent. */
  close(): Promise<void>;
}

export async function connectWorkerRuntime(o: WorkerRuntimeOptions): Promise<WorkerRuntime> {
  const nats = o.nats ?? (o.natsServers !== undefined ? { servers: o.natsServers } : undefined);
  if (nats === undefined) throw new BusError('bus_connect_failed', 'connectWorkerRuntime: nats is required (natsConnectionConfig(env) of @cordum/service-kit)');
  const redis = createRedis({ ...o.redis, name: o.redis.name ?? o.name, events: redisLogEvents(o.logger) });
  let bus: Bus | undefined;
  try {
    bus = await connectBus({ ...nats, name: o.name, logger: o.logger, registry: o.registry, waitOnFirstConnect: true });
    // D43: every service ensures the streams, so results land even if the worker starts first.
    await bus.ensureStreams();
  } catch (err) {
    // P316: a connection made before a failed stream set-up is closed too (it reconnects for ever).
    await bus?.close().catch(() => undefined);
    await closeRedis(redis);
    throw err;
  }
  const connected = bus;
  let closing: Promise<void> | null = null;
  // P268: probes asking at once share one stream request and one PING, for half a second.
  // P263: CORDUM_SYS must answer too (results are published to it); 1.5 s inside a health server's 2 s bound.
  const jetstream = sharedCheck(() => connected.streamAnswers(1_500));
  const redisAnswers = sharedCheck(() => pingRedis(redis));
  const checks: ReadinessCheck[] = [
    { name: 'nats', check: () => connected.connected },
    { name: 'jetstream', check: jetstream },
    { name: 'redis', check: redisAnswers },
  ];
  return {
    bus: connected,
    redis,
    checks,
    ready: async () => (await Promise.all(checks.map(async (c) => c.check()))).every(Boolean),
    close: () => {
      closing ??= (async () => {
        try {
          await connected.close();
        } finally {
          await closeRedis(redis);
        }
      })();
      return closing;
    },
  };
}
