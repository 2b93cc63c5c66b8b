// Composition root (ARCHITECTURE "Repository layout", STYLE 2): builds the
// object graph from config, owns every socket and connection, and tears them
// down in reverse order. main.ts only loads config and calls this.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, type Registry } from 'prom-client';
import type { Express } from 'express';
import { connectBus, type Bus } from '@cordum/bus';
import { routeGrpcLogs } from '@cordum/protocol';
import { createJobStore, createStateBroadcaster, dlqNotifier, type JobRecord, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, pingRedis, redisLogEvents, startClockSync, warnIfEvicting, type RedisClient } from '@cordum/redis';
import { clockOffsetGauge, createExpressServer, createLogger, createReadinessLog, formatAddr, listenHost, createMetricsRegistry, runCheck, sharedCheck, startHealthServer, type HealthServer, type Logger, type ReadinessCheck, errorText } from '@cordum/service-kit';
import { answerClientErrors } from './http/client-errors';
import type { GatewayConfig } from './config';
import { clampRateLimits, createConfigStore, createConfigWatcher, parseSection, type ConfigWatcher } from '@cordum/config-overlay';
import { combineKeyStores, createStaticKeyStore } from './auth/keys';
import { createManagedKeys, FAILED_LOGIN_SCOPES } from './auth/managed';
import { mountKeyRoutes } from './routes/keys';
import { createRateLimiter, type RateLimits } from './ratelimit/limiter';
import { rateLimit } from './ratelimit/middleware';
import { createStreamHub } from './stream/hub';
import { attachStreamServer } from './stream/ws';
import { startGrpcApi } from './grpc/api';
import { ApiError } from './http/errors';
import { createApp, type Readiness } from './http/app';
import { MAX_BODY_BYTES, mountJobRoutes } from './routes/jobs';
import { createOperations } from './operations';
import { startDlqNoticeConsumer } from './dlq/notices';
import { createKernelEvaluator, type PolicyEvaluator } from './safety/evaluator';
import { createPolicyAdmin, type PolicyAdmin } from './safety/policy-admin';
import { createApprovalService } from './approvals/service';
import { mountApprovalRoutes } from './routes/approvals';
import { mountPolicyRoutes } from './routes/policy';
import { createSubmitService, redisUsable } from './submit/service';

/** start() ended because stop() was called while it ran. */
class StartAborted extends Error {
  constructor() {
    super('stopped while starting');
  }
}

export interface GatewayDeps {
  logger?: Logger;
  registry?: Registry;
  /** Replaces the gRPC SafetyKernel client (tests of other transports; the default talks to SAFETY_KERNEL_ADDR). */
  evaluator?: PolicyEvaluator;
  /** Replaces the gRPC client behind /api/v1/policy/* (default: SAFETY_KERNEL_ADDR). */
  policyAdmin?: PolicyAdmin;
  /** WebSocket ping interval (default 30 s); tests shorten it. */
  streamPingIntervalMs?: number;
  /** How long the stream hub stays subscribed after its last client left (tests shorten it). */
  streamUnsubscribeLingerMs?: number;
  /** How long a gRPC call's request message may take to arrive (default 30 s); tests shorten it. */
  grpcReceiveTimeoutMs?: number;
  /** Wraps the replica's job store (tests land another replica's write between a request's read and its next step). */
  wrapStore?: (store: JobStore) => JobStore;
}

export interface Gateway {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly logger: Logger;
  /** Bound ports, known after start() (useful with port 0). */
  readonly httpPort: number;
  readonly metricsPort: number;
  readonly grpcPort: number;
  /** The express app (route-table tests walk its router); null before start(). */
  readonly httpApp: Express | null;
  /** Rate limits currently applied (env, then config `rate_limits`). */
  rateLimits(): RateLimits;
}

type Lifecycle = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

const PING_TIMEOUT_MS = 1_000;
const HTTP_DRAIN_MS = 5_000;
const READY_CHECK_TIMEOUT_MS = 2_000;
/** The jetstream check's own request timeout, inside READY_CHECK_TIMEOUT_MS (so nats.js ends the request, not the bound). */
const STREAM_CHECK_TIMEOUT_MS = 1_500;

function listen(server: Server, addr: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, listenHost(addr), () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** How often a stopping gateway closes the keep-alive connections that went idle (P232). */
const IDLE_SWEEP_MS = 100;

/**
 * Stop accepting, let in-flight requests finish, then cut what is left. A connection whose
 * request is answered during the drain goes idle (its answer said `Connection: close`, P232) and
 * is closed within IDLE_SWEEP_MS, not cut with the rest after HTTP_DRAIN_MS: a client that sent
 * its next request on it meanwhile got ECONNRESET.
 */
function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    const force = setTimeout(() => server.closeAllConnections(), HTTP_DRAIN_MS);
    server.close(() => {
      clearTimeout(force);
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections();
  });
}

export function createGateway(config: GatewayConfig, deps: GatewayDeps = {}): Gateway {
  const logger = deps.logger ?? createLogger({ service: config.service, instance: config.instanceId, level: config.logLevel });
  routeGrpcLogs(logger); // P291
  const registry = deps.registry ?? createMetricsRegistry({ service: config.service, pod: config.instanceId });
  let state: Lifecycle = 'idle';
  let stopping: Promise<void> | null = null;
  let httpPort = -1;
  let metricsPort = -1;
  let grpcPort = -1;
  let httpApp: Express | null = null;
  let currentLimits = (): RateLimits => ({ rps: config.rateLimit.rps, burst: config.rateLimit.burst });
  // Cleanups run in reverse order of creation, each even if another fails (STYLE 3).
  const cleanups: { name: string; fn: () => Promise<void> | void }[] = [];
  /** Set by stop() in the same turn as its last pop finds nothing left: what start() registers after that, it closes itself. */
  let drained = false;
  /**
   * Registers what closes a resource start() just made. A stop that came while starting (SIGTERM
   * during a slow start) ends start() here: the resource is closed by the running stop, or at
   * once if that stop has finished, and the gateway never reports ready.
   */
  const track = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
    cleanups.push({ name, fn });
    if (!stopping) return;
    if (drained) await runCleanups();
    throw new StartAborted();
  };
  const runCleanups = async (forStop = false): Promise<void> => {
    // pop: newest first, including anything a start still running registers meanwhile
    for (let c = cleanups.pop(); c; c = cleanups.pop()) {
      const at = Date.now();
      try {
        await c.fn();
        logger.debug('closed', { name: c.name, ms: Date.now() - at });
      } catch (err) {
        logger.warn('cleanup failed', { name: c.name, err: errorText(err) });
      }
    }
    if (forStop) drained = true;
  };

  const start = async (): Promise<void> => {
    state = 'starting';
    logger.info('starting api-gateway', {
      http_addr: formatAddr(config.httpAddr),
      metrics_addr: formatAddr(config.metricsAddr),
      safety_kernel_addr: config.safetyKernelAddr,
      api_keys: config.apiKeys.length,
      job_ttl_ms: config.jobTtlMs,
      dlq_ttl_ms: config.dlqTtlMs,
    });

    const redis: RedisClient = createRedis({ ...config.redis, name: config.instanceId, events: redisLogEvents(logger) });
    await track('redis', () => closeRedis(redis));
    // P241: timestamps other replicas read are taken in Redis's time (clusterNow).
    const clock = startClockSync(redis, { log: logger, onMeasure: clockOffsetGauge(registry) });
    await track('clock sync', () => clock.stop());
    await clock.ready;
    // Dial now (a lazy client would otherwise stay 'wait' until the first request); readiness reports the result.
    if (!(await pingRedis(redis, PING_TIMEOUT_MS))) logger.warn('redis not answering at start; /readyz stays 503 until it does', { hint: 'down, or refusing the credentials in REDIS_URL (logged just before)' });
    else await warnIfEvicting(redis, (msg, fields) => logger.warn(msg, fields));
    const bus: Bus = await connectBus({ ...config.nats, name: config.instanceId, logger, registry, waitOnFirstConnect: true });
    await track('bus', () => bus.close());
    await bus.ensureStreams();

    const evaluator = deps.evaluator ?? createKernelEvaluator(config.safetyKernelAddr);
    await track('safety-kernel client', () => evaluator.close());
    const policyAdmin = deps.policyAdmin ?? createPolicyAdmin(config.safetyKernelAddr);
    await track('policy passthrough client', () => policyAdmin.close());

    const hub = createStreamHub({ bus, redis, logger, registry, lingerMs: deps.streamUnsubscribeLingerMs, ...(config.capVerifyKey ? { verifyKeys: config.capVerifyKey } : {}) });
    hub.start();
    await track('stream hub', () => hub.stop());
    // CONTRACT §7, counted by whichever service commits the transition (here: creations, cancels, approvals).
    const jobsTotal = new Counter({ name: 'cordum_jobs_total', help: 'Committed job transitions by target state.', labelNames: ['state'], registers: [registry] });
    // D15: transitions this replica commits (creations, cancels, approvals) are broadcast like the
    // scheduler's; ones that may not have left are announced once NATS is back (P148).
    const states = createStateBroadcaster({ bus, senderId: config.instanceId, component: 'api-gateway', logger });
    await track('state broadcaster', () => states.stop());
    const onTransition = (job: JobRecord): void => {
      jobsTotal.inc({ state: job.state });
      hub.noteTenant(job.id, job.tenant);
      states.broadcast(job);
    };
    // D14: the sys.job.dlq notice after each DLQ write this replica makes (a job DENIED at submit).
    const created = createJobStore(redis, { jobTtlMs: config.jobTtlMs, dlqTtlMs: config.dlqTtlMs, onTransition, onDlq: dlqNotifier({ bus, senderId: config.instanceId, logger }) });
    const store = deps.wrapStore?.(created) ?? created;
    const dlqNotices = await startDlqNoticeConsumer({ bus, store, logger, registry });
    await track('dlq notice consumer', () => dlqNotices.stop());
    const locks = createLocks(redis);
    const submit = createSubmitService({ redis, store, bus, locks, evaluator, logger, instanceId: config.instanceId, jobTtlMs: config.jobTtlMs });
    const ops = createOperations({ config, redis, bus, store, locks, submit, logger, redisReady: () => redisUsable(redis) });
    ops.start();
    await track('operations', () => ops.stop());
    const approvals = createApprovalService({ store, locks, bus, evaluator, logger, instanceId: config.instanceId, redisReady: () => redisUsable(redis) });

    const limiter = createRateLimiter({ redis, useRedis: config.rateLimit.useRedis, limits: currentLimits(), registry, logger });
    currentLimits = () => limiter.limits();
    // Live `rate_limits: {rps, burst}` (D24, D33): the gateway reports only this section's hash.
    const watcher: ConfigWatcher = createConfigWatcher({
      store: createConfigStore(redis),
      bus,
      logger,
      registry,
      service: config.service,
      instanceId: config.instanceId,
      pollIntervalMs: config.configReloadIntervalMs,
      sections: {
        rate_limits: (value) => {
          const rl = parseSection('rate_limits', value) ?? {};
          // A value stored before RATE_LIMIT_BOUNDS is run at the nearest bound.
          const next = clampRateLimits({ rps: rl.rps ?? config.rateLimit.rps, burst: rl.burst ?? config.rateLimit.burst });
          limiter.setLimits(next);
          logger.info('rate limits applied', next);
        },
      },
    });
    await track('config watcher', () => watcher.stop());
    await watcher.start();

    // P296: the failed-login budgets answer 429 `rate_limited` too; counted apart from the limiter's hits.
    const throttled = new Counter({
      name: 'cordum_auth_failed_login_throttled_total',
      help: 'Managed-key checks refused 429 by a failed-login budget (P55, P222), by scope: key (one address and key id) or address',
      labelNames: ['scope'],
      registers: [registry],
    });
    for (const scope of FAILED_LOGIN_SCOPES) throttled.inc({ scope }, 0);
    const managedKeys = createManagedKeys(redis, { onThrottled: (scope) => throttled.inc({ scope }) });
    const keys = combineKeyStores(createStaticKeyStore(config.apiKeys), managedKeys);

    const checks: ReadinessCheck[] = [
      // P232: unready from the moment it starts to stop (a load balancer that polls /readyz drains it first).
      { name: 'serving', check: () => state === 'running' },
      // P268: one PING and one stream request per half second, however many probes, scrapes and gRPC health Watches ask.
      { name: 'redis', check: sharedCheck(() => pingRedis(redis, PING_TIMEOUT_MS)) },
      { name: 'nats', check: () => bus.connected },
      // P263: the socket can be up while nothing stores a submit (a frozen server before its pings
      // fail, a lost stream, a cluster node without a quorum): CORDUM_SYS must answer.
      { name: 'jetstream', check: sharedCheck(() => bus.streamAnswers(STREAM_CHECK_TIMEOUT_MS)) },
      { name: 'config', check: () => watcher.ready },
    ];
    // P315: the API's /readyz (what the probes ask) and the metrics port's log a change once, together.
    const readinessLog = createReadinessLog(logger);
    const readiness: Readiness = {
      async check() {
        const results = await Promise.all(checks.map(async (c) => [c.name, await runCheck(c, READY_CHECK_TIMEOUT_MS)] as const));
        const ready = results.every(([, ok]) => ok);
        readinessLog(ready, results.filter(([, ok]) => !ok).map(([n]) => n));
        return { ready, checks: Object.fromEntries(results) };
      },
    };

    const app = createApp({
      keys,
      logger,
      registry,
      readiness,
      afterAuth: [rateLimit(limiter)],
      routes: (mount) => {
        mountJobRoutes(mount, { submit, store, redisReady: () => redisUsable(redis) });
        ops.mount(mount);
        mountApprovalRoutes(mount, { redis, store, approvals, audit: ops.audit, redisReady: () => redisUsable(redis) });
        mountPolicyRoutes(mount, { policy: policyAdmin });
        mountKeyRoutes(mount, { keys: managedKeys, audit: ops.audit, redisReady: () => redisUsable(redis) });
        mount('GET /api/v1/stream', () => {
          throw new ApiError('upgrade_required', { headers: { Upgrade: 'websocket' } });
        });
      },
    });
    httpApp = app;
    const server = createExpressServer(app);
    // P232: once stopping, every answer closes its connection, so a keep-alive client moves to
    // another replica after its current request instead of being cut when the drain ends.
    server.prependListener('request', (_req, res) => {
      if (state === 'stopping') res.setHeader('Connection', 'close');
    });
    // Slow-loris guard; generous enough for a 2 MiB body on a slow link.
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    answerClientErrors(server, MAX_BODY_BYTES);
    await listen(server, config.httpAddr);
    await track('http', () => closeHttp(server));
    httpPort = (server.address() as AddressInfo).port;
    const stream = attachStreamServer(server, {
      keys,
      hub,
      limiter,
      logger,
      registry,
      pingIntervalMs: deps.streamPingIntervalMs,
      maxClients: config.stream.maxClients,
      maxClientsPerTenant: config.stream.maxClientsPerTenant,
    });
    await track('stream', () => stream.close());

    const grpcApi = await startGrpcApi({
      addr: config.grpcAddr,
      keys,
      limiter,
      submit,
      store,
      logger,
      registry,
      receiveTimeoutMs: deps.grpcReceiveTimeoutMs,
      redisReady: () => redisUsable(redis),
      // The checks of /readyz (a Redis PING, NATS, JetStream, the first config load): a replica HTTP's probe keeps out is not SERVING either.
      ready: async () => state === 'running' && (await readiness.check()).ready,
    });
    await track('grpc', () => grpcApi.close());
    grpcPort = grpcApi.port;

    const health: HealthServer = await startHealthServer({ addr: config.metricsAddr, registry, logger, checks, readinessLog });
    await track('metrics server', () => health.close());
    metricsPort = health.port;

    if (stopping) throw new StartAborted();
    state = 'running';
    logger.info('api-gateway ready', { http_port: httpPort, metrics_port: metricsPort, grpc_port: grpcPort });
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      state = 'stopping';
      await runCleanups(true);
      state = 'stopped';
      logger.info('api-gateway stopped');
    })();
    return stopping;
  };

  return {
    start: async () => {
      if (state !== 'idle') throw new Error(`gateway cannot start from state ${state}`);
      try {
        await start();
      } catch (err) {
        // A stop while starting is not a failed start, whatever the step it cut threw (track's
        // StartAborted, or a closed bus or Redis under ensureStreams, the DLQ consumer, the config
        // watcher): the stop's caller (a signal) ends the process.
        const stoppedMeanwhile = stopping !== null;
        await stop();
        if (stoppedMeanwhile) return;
        throw err;
      }
    },
    stop,
    logger,
    get httpPort() {
      return httpPort;
    },
    get metricsPort() {
      return metricsPort;
    },
    get grpcPort() {
      return grpcPort;
    },
    get httpApp() {
      return httpApp;
    },
    rateLimits: () => currentLimits(),
  };
}
