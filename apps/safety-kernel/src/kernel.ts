import * as grpc from '@grpc/grpc-js';
import { connectBus, type Bus } from '@cordum/bus';
import { createConfigStore, createConfigWatcher, parseSafetySection, type ConfigWatcher } from '@cordum/config-overlay';
import { SafetyKernel, ServingStatus, addGrpcService, addHealthService, grpcServerOptions } from '@cordum/protocol';
import { closeRedis, createRedis, pingRedis, redisLogEvents, type RedisClient } from '@cordum/redis';
import { startHealthServer, type HealthServer, type Logger, type Registry, type Service } from '@cordum/service-kit';
import { DecisionCache } from './cache/decision-cache';
import type { SafetyKernelRuntimeConfig } from './config';
import { createSafetyService, type SafetyService } from './grpc/safety-service';
import { SafetyMetrics } from './metrics';
import { readPolicyFile } from './policy/source';
import { PolicyComposer } from './snapshots/composer';
import { SnapshotStore } from './snapshots/store';
import { createRedisVelocity } from './velocity/redis-velocity';

export interface SafetyKernelDeps {
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /** Listen for SIGHUP to reload the policy file (default true). Tests call reloadPolicy() instead. */
  reloadOnSighup?: boolean;
}

export interface SafetyKernelService extends Service {
  /** Bound ports, valid after start() (useful with port 0 in tests). */
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly snapshotId: string | undefined;
  /** Entries in the decision cache (0 when it is off). */
  readonly decisionCacheSize: number;
  /** Re-reads the policy file; an invalid file keeps the current policy. */
  reloadPolicy(): Promise<{ ok: true; snapshotId: string; changed: boolean } | { ok: false; error: string }>;
}

/** The config section this service consumes and reports (D33). */
const SAFETY_SECTION = 'safety';

type State = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

const GRPC_SERVICE_NAME = 'cordum.v1.SafetyKernel';
const GRPC_DRAIN_MS = 5_000;

function grpcBindAddress(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function bind(server: grpc.Server, addr: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
  });
}

/** In-flight calls get GRPC_DRAIN_MS to finish; open health Watch streams would otherwise hold tryShutdown forever. */
function shutdownGrpc(server: grpc.Server, service: SafetyService | undefined): Promise<void> {
  // Decide streams stay open as long as their clients keep them: end them (after their answers).
  service?.decide.drain();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, GRPC_DRAIN_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Composition root of the safety kernel (CONTRACT §4, BEHAVIOURS §6). */
export function createSafetyKernel(config: SafetyKernelRuntimeConfig, deps: SafetyKernelDeps): SafetyKernelService {
  const log = deps.logger;
  const now = deps.now ?? Date.now;
  let state: State = 'new';
  let redis: RedisClient | undefined;
  let bus: Bus | undefined;
  let store: SnapshotStore | undefined;
  let composer: PolicyComposer | undefined;
  let cache: DecisionCache | undefined;
  let watcher: ConfigWatcher | undefined;
  let server: grpc.Server | undefined;
  let service: SafetyService | undefined;
  let health: HealthServer | undefined;
  let grpcPort = 0;
  let stopping: Promise<void> | undefined;
  let reloading: Promise<Awaited<ReturnType<SafetyKernelService['reloadPolicy']>>> | undefined;
  const metrics = new SafetyMetrics(deps.registry);

  const reloadPolicy: SafetyKernelService['reloadPolicy'] = () => {
    // Serialise reloads: two SIGHUPs in a row must not activate out of order.
    const run = async (): Promise<Awaited<ReturnType<SafetyKernelService['reloadPolicy']>>> => {
      if (!store || !composer || state !== 'running') return { ok: false, error: `kernel is ${state}` };
      if (config.policySource !== 'file') return { ok: false, error: 'no policy file to reload (built-in default in use)' };
      try {
        const a = await composer.setFilePolicy(await readPolicyFile(config.policy.path));
        log.info('policy reloaded', { snapshot: a.snapshotId, changed: a.changed, rules: a.ruleCount, bundles: composer.bundleIds });
        return { ok: true, snapshotId: a.snapshotId, changed: a.changed };
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        log.error('policy reload rejected, keeping the previous policy', { error, snapshot: store.active?.id });
        return { ok: false, error };
      }
    };
    reloading = (reloading ?? Promise.resolve()).then(run, run);
    return reloading;
  };

  const onSighup = (): void => {
    void reloadPolicy();
  };

  /**
   * The config watcher's setter for `safety` (D22). Throwing keeps the watcher's
   * previous hash, so the section is retried on the next reload and the replica's
   * applied report keeps showing the old hash (DRIFTED) while the bundle is bad.
   */
  const applySafetySection = async (value: unknown, hash: string | null): Promise<void> => {
    const cmp = composer;
    if (!cmp) throw new Error(`kernel is ${state}`);
    try {
      const bundles = parseSafetySection(value);
      for (const b of bundles) {
        if (b.defaultDecision && b.defaultDecision !== cmp.defaultDecision)
          log.warn('policy bundle default_decision ignored; the policy file decides when no rule matches', { bundle: b.id, default_decision: b.defaultDecision });
      }
      const a = await cmp.setBundles(bundles);
      log.info('policy bundles applied', { snapshot: a.snapshotId, changed: a.changed, rules: a.ruleCount, bundles: bundles.map((b) => b.id), hash });
    } catch (err) {
      log.error('policy bundles rejected, keeping the previous policy', { error: err instanceof Error ? err.message : String(err), hash, snapshot: store?.active?.id });
      throw err;
    }
  };

  const start = async (): Promise<void> => {
    if (state !== 'new') throw new Error(`safety kernel cannot start: it is ${state}`);
    state = 'starting';
    if (config.decisionCache.ttlMs > 0) cache = new DecisionCache({ ...config.decisionCache, now }, metrics.cacheObserver());
    const c = cache;
    redis = createRedis({ ...config.redis, name: `${config.service}:${config.instanceId}`, events: redisLogEvents(log) });
    const s = new SnapshotStore(redis, (snap) => c?.reset(snap.id));
    store = s;
    composer = new PolicyComposer(s, config.initialPolicy, now);

    bus = await connectBus({ servers: config.natsServers, name: `${config.service}:${config.instanceId}`, logger: log, registry: deps.registry });
    await bus.ensureStreams();
    // The watcher's startup load activates file + bundles in one snapshot, so a
    // restart does not record a file-only snapshot first.
    const w = createConfigWatcher({
      store: createConfigStore(redis),
      bus,
      logger: log,
      registry: deps.registry,
      service: config.service,
      instanceId: config.instanceId,
      pollIntervalMs: config.configReloadIntervalMs,
      sections: { [SAFETY_SECTION]: applySafetySection },
    });
    watcher = w;
    await w.start();
    // Bundles unreadable or invalid at start: serve the file's policy (not ready until they load).
    if (!s.active) await composer.activateCurrent();
    const snap = s.active;
    log.info('policy loaded', {
      snapshot: snap?.id,
      rules: snap?.policy.rules.length,
      source: config.policySource,
      path: config.policy.path,
      bundles: composer.bundleIds,
      decision_cache_ttl_ms: config.decisionCache.ttlMs,
    });

    const r = redis;
    const b = bus;
    server = new grpc.Server(grpcServerOptions());
    const cmp = composer;
    service = createSafetyService({
      store: s,
      velocity: createRedisVelocity(r, { now }),
      metrics,
      logger: log,
      cache: c,
      now,
      ruleSource: (id) => cmp.ruleSource(id),
      policyComplete: () => w.ready,
    });
    addGrpcService(server, SafetyKernel, service);
    addHealthService(server, async (name) => {
      if (name !== '' && name !== GRPC_SERVICE_NAME) return undefined;
      return s.active && w.ready && (await pingRedis(r, 500)) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    });
    grpcPort = await bind(server, grpcBindAddress(config.grpcAddr));
    log.info('grpc listening', { host: config.grpcAddr.host, port: grpcPort });

    health = await startHealthServer({
      addr: config.httpAddr,
      registry: deps.registry,
      logger: log,
      checks: [
        { name: 'policy', check: () => s.active !== null },
        { name: 'redis', check: () => pingRedis(r, 1000) },
        { name: 'nats', check: () => b.connected },
        // D43: the first config load (bundles included) succeeded.
        { name: 'config', check: () => w.ready },
        // A snapshot activated while Redis was down is recorded as soon as it is back.
        { name: 'snapshot_recorded', check: () => s.ensureRecorded() },
      ],
    });
    if (deps.reloadOnSighup !== false) process.on('SIGHUP', onSighup);
    state = 'running';
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      state = 'stopping';
      process.off('SIGHUP', onSighup);
      const steps: [string, () => Promise<void>][] = [
        ['grpc', async () => (server ? shutdownGrpc(server, service) : undefined)],
        ['health', async () => health?.close()],
        ['config watcher', async () => watcher?.stop()],
        ['reload', async () => void (await reloading)],
        ['policy updates', async () => composer?.idle()],
        ['bus', async () => bus?.close()],
        ['redis', async () => (redis ? closeRedis(redis) : undefined)],
      ];
      for (const [name, fn] of steps) {
        try {
          log.debug('stop step', { step: name });
          await fn();
        } catch (err) {
          log.error('stop step failed', { step: name, err });
        }
      }
      state = 'stopped';
    })();
    return stopping;
  };

  return {
    start,
    stop,
    reloadPolicy,
    get grpcPort() {
      return grpcPort;
    },
    get httpPort() {
      return health?.port ?? 0;
    },
    get snapshotId() {
      return store?.active?.id;
    },
    get decisionCacheSize() {
      return cache?.size ?? 0;
    },
  };
}
