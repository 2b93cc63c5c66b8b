import * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import { connectBus, type Bus } from '@cordum/bus';
import {
  configStatus,
  createConfigStore,
  createConfigWatcher,
  parseSafetySection,
  publishFileRules,
  removeFileRules,
  safetyConfigKeys,
  type ConfigStore,
  type ConfigWatcher,
  type Policy,
  type PolicyBundle,
} from '@cordum/config-overlay';
import { SafetyKernel, ServingStatus, addGrpcService, addHealthService, bindGrpcServer, grpcServerOptions, routeGrpcLogs, shutdownGrpcServer, type HealthService } from '@cordum/protocol';
import { clusterNow, closeRedis, createRedis, pingRedis, redisLogEvents, startClockSync, type ClockSync, type RedisClient } from '@cordum/redis';
import { clockOffsetGauge, formatAddr, sharedCheck, startHealthServer, type HealthServer, type Logger, type Registry, type Service, errorText } from '@cordum/service-kit';
import { DecisionCache } from './cache/decision-cache';
import type { SafetyKernelRuntimeConfig } from './config';
import { createSafetyService, type SafetyService } from './grpc/safety-service';
import { safetyKeys } from './keys';
import { SafetyMetrics } from './metrics';
import { snapshotId } from './policy/canonical';
import { readPolicyFile } from './policy/source';
import { PolicyComposer } from './snapshots/composer';
import { SnapshotStore } from './snapshots/store';
import { createRedisVelocity } from './velocity/redis-velocity';

export interface SafetyKernelDeps {
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /** Listen for SIGHUP to reload the policy file (default true). Tests call reloadPolicy() instead; the file is also checked every reload interval (P203). */
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
/** The policy file check reads again this long after a read that found a change (P203) or failed (P229). */
const FILE_SETTLE_MS = 250;
const settle = (): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, FILE_SETTLE_MS).unref());

/**
 * Lifetime of `cordum:safety:bundles:applied:<file id>`: written on each apply, renewed with
 * the file rule ids every reload interval while a kernel with that file runs, so a record
 * outlives a stop of every kernel by 30 days and a file version nobody runs any more leaves nothing.
 */
export const APPLIED_RECORD_TTL_MS = 30 * 24 * 3600 * 1000;

/** `cordum:safety:bundles:applied:<file id>`: the last safety section a kernel with that file applied. */
const appliedRecordSchema = z.object({
  hash: z.string().nullable(),
  section: z.unknown(),
  instance_id: z.string(),
  applied_at: z.string(),
});
type AppliedRecord = z.infer<typeof appliedRecordSchema>;

const shortHash = (h: string | null | undefined): string => (h ? h.slice(0, 12) : 'absent');

/** In-flight calls get GRPC_DRAIN_MS to finish; open Decide streams and health Watches are ended first, as they would hold tryShutdown. */
function shutdownGrpc(server: grpc.Server, service: SafetyService | undefined, grpcHealth: HealthService | undefined): Promise<void> {
  return shutdownGrpcServer(server, {
    endStreams: () => {
      // Decide streams stay open as long as their clients keep them: end them (after their answers).
      service?.decide.drain();
      // So do health Watches: NOT_SERVING, then ended (P232).
      grpcHealth?.endWatches();
    },
  });
}

/** Composition root of the safety kernel (CONTRACT §4, BEHAVIOURS §6). */
export function createSafetyKernel(config: SafetyKernelRuntimeConfig, deps: SafetyKernelDeps): SafetyKernelService {
  const log = deps.logger;
  routeGrpcLogs(log); // P291
  const now = deps.now ?? clusterNow;
  let state: State = 'new';
  let redis: RedisClient | undefined;
  let clock: ClockSync | undefined;
  let bus: Bus | undefined;
  let store: SnapshotStore | undefined;
  let composer: PolicyComposer | undefined;
  let cache: DecisionCache | undefined;
  let watcher: ConfigWatcher | undefined;
  let configStore: ConfigStore | undefined;
  let server: grpc.Server | undefined;
  let service: SafetyService | undefined;
  let health: HealthServer | undefined;
  let grpcHealth: HealthService | undefined;
  let grpcPort = 0;
  let stopping: Promise<void> | undefined;
  let reloading: Promise<Awaited<ReturnType<SafetyKernelService['reloadPolicy']>>> | undefined;
  const metrics = new SafetyMetrics(deps.registry);
  /** The last safety section the watcher applied (value as stored, null = absent). */
  let lastApplied: { section: unknown; hash: string | null } | undefined;
  /**
   * Set while this replica, whose first load found a stored section it refuses, serves the
   * section last applied with its policy file instead (as the running kernels do).
   */
  let fallback: { hash: string | null; refusedHash: string | null } | undefined;
  /** The refused section's error while the first load has not succeeded (the not-ready reason). */
  let refusal: string | undefined;
  /** Why the last fallback attempt found nothing to serve (logged once per reason). */
  let noFallback: string | undefined;
  const fileRulesKey = safetyConfigKeys().fileRules();
  let fileRulesTimer: NodeJS.Timeout | undefined;
  let fileRulesError: string | undefined;
  let publishing: Promise<void> = Promise.resolve();

  /**
   * Set once a stored safety section is applied (its only section). P294: the watcher is ready only
   * after its whole reload ends (the applied report written too); a kernel serving a fallback whose
   * fixed section had just applied dropped the fallback first, and refused Checks as "not ready"
   * (and gRPC health NOT_SERVING) until then.
   */
  let sectionApplied = false;
  /** True once the bundles loaded, or a fallback section is served in place of a refused one. */
  const policyComplete = (): boolean => sectionApplied || Boolean(watcher?.ready) || fallback !== undefined;

  /**
   * Publishes this kernel's file rule ids at `cordum:safety:file-rules` (field = instance id,
   * expiring after 3 reload intervals unless refreshed), so config writers refuse a bundle rule
   * with one of these ids instead of storing a section this kernel must refuse; renews the
   * record of the section applied with this file (APPLIED_RECORD_TTL_MS). Never throws.
   */
  const publishOwnFileRules = (): Promise<void> => {
    const run = async (): Promise<void> => {
      const r = redis;
      const cmp = composer;
      if (!r || !cmp) return;
      // P241 (P271): in Redis's time, as the gateway's liveFileRules reads it; host time on a host whose clock is off aged the entry early or late.
      const at = now();
      try {
        await publishFileRules(r, fileRulesKey, { instance_id: config.instanceId, file_id: cmp.fileId, rule_ids: cmp.fileRuleIds, expires_at: at + 3 * config.configReloadIntervalMs }, at);
        await r.pexpire(safetyKeys.appliedBundles(cmp.fileId), APPLIED_RECORD_TTL_MS);
        if (fileRulesError !== undefined) log.info('policy file rule ids published again', { rules: cmp.fileRuleIds.length });
        fileRulesError = undefined;
      } catch (err) {
        const error = errorText(err);
        if (fileRulesError !== error)
          log.warn('policy file rule ids not published; config writers cannot refuse a bundle rule id that clashes with this file until they are', { error });
        fileRulesError = error;
      }
    };
    publishing = publishing.then(run);
    return publishing;
  };

  /** Records the section this replica applies for its policy file (the start-time fallback reads it). Never throws. */
  const recordApplied = async (): Promise<void> => {
    const r = redis;
    const cmp = composer;
    const a = lastApplied;
    if (!r || !cmp || !a || fallback) return;
    const rec: AppliedRecord = { hash: a.hash, section: a.section, instance_id: config.instanceId, applied_at: new Date(now()).toISOString() };
    try {
      await r.set(safetyKeys.appliedBundles(cmp.fileId), JSON.stringify(rec), 'PX', APPLIED_RECORD_TTL_MS);
    } catch (err) {
      log.warn('applied safety section not recorded; a kernel starting beside a refused section cannot fall back to it', { error: errorText(err), hash: a.hash });
    }
  };

  /**
   * The section to serve in place of a refused one: the last one a kernel with this policy file
   * applied, unless a running kernel reports applying another one (then this replica would
   * decide differently from it, which P48 forbids).
   */
  const findFallback = async (): Promise<{ record: AppliedRecord; bundles: PolicyBundle[] } | { none: string }> => {
    const r = redis;
    const cmp = composer;
    const st = configStore;
    if (!r || !cmp || !st) return { none: `kernel is ${state}` };
    const raw = await r.get(safetyKeys.appliedBundles(cmp.fileId));
    if (raw === null) return { none: 'no kernel with this policy file has applied a safety section yet' };
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = undefined;
    }
    const rec = appliedRecordSchema.safeParse(parsed);
    if (!rec.success) return { none: `${safetyKeys.appliedBundles(cmp.fileId)} is unreadable` };
    const other = (await configStatus(st)).replicas.find(
      (x) => x.service === config.service && x.instance_id !== config.instanceId && x.status !== 'NOT_CHECKED' && Object.hasOwn(x.hashes, SAFETY_SECTION) && x.hashes[SAFETY_SECTION] !== rec.data.hash,
    );
    if (other) return { none: `kernel ${other.instance_id} applies another safety section (${shortHash(other.hashes[SAFETY_SECTION])}) than the one last applied with this policy file (${shortHash(rec.data.hash)})` };
    try {
      return { record: rec.data, bundles: parseSafetySection(rec.data.section) };
    } catch (err) {
      return { none: `the section last applied with this policy file is refused too: ${errorText(err)}` };
    }
  };

  /**
   * First load found a stored section this replica refuses (invalid, or a rule id of its policy
   * file). Serving the file alone could decide differently from the running kernels (P48), and
   * staying unready means a restart of every kernel leaves none serving. The running kernels
   * kept the section they applied before; this replica serves that one too when it can tell
   * which it is (see findFallback), and stays not ready otherwise. Never throws.
   */
  const fallBack = async (refusedHash: string | null, error: string): Promise<void> => {
    const cmp = composer;
    if (!cmp) return;
    let found: Awaited<ReturnType<typeof findFallback>>;
    try {
      found = await findFallback();
    } catch (err) {
      found = { none: `the last applied section cannot be read: ${errorText(err)}` };
    }
    if ('record' in found) {
      try {
        const a = await cmp.setBundles(found.bundles);
        fallback = { hash: found.record.hash, refusedHash };
        noFallback = undefined;
        metrics.bundlesFallback.set(1);
        log.error('policy bundles refused at start; serving the safety section last applied with this policy file, as the running kernels do, until the stored one is fixed', {
          error,
          refused_hash: refusedHash,
          serving_hash: found.record.hash,
          applied_by: found.record.instance_id,
          applied_at: found.record.applied_at,
          snapshot: a.snapshotId,
          bundles: cmp.bundleIds,
        });
        return;
      } catch (err) {
        found = { none: `the section last applied with this policy file is refused too: ${errorText(err)}` };
      }
    }
    if (noFallback !== found.none)
      log.error('policy bundles refused at start and no section to fall back to; Check and Evaluate answer UNAVAILABLE until the stored section is fixed', { error, why: found.none, refused_hash: refusedHash });
    noFallback = found.none;
  };

  type ReloadOutcome = Awaited<ReturnType<SafetyKernelService['reloadPolicy']>>;
  /**
   * Reads the policy file and activates it with the bundles. Serialised: two SIGHUPs in a row
   * (or a SIGHUP and the file check) must not activate out of order. `read` is the file check's
   * settled read (P203), whose rejections it logs itself (once per distinct error, as it retries
   * every interval); a SIGHUP reads the file here and every rejection is logged.
   */
  const applyPolicyFile = (trigger: 'sighup' | 'file_changed', read?: Policy): Promise<ReloadOutcome> => {
    const run = async (): Promise<ReloadOutcome> => {
      if (!store || !composer || state !== 'running') return { ok: false, error: `kernel is ${state}` };
      if (config.policySource !== 'file') return { ok: false, error: 'no policy file to reload (built-in default in use)' };
      try {
        const a = await composer.setFilePolicy(read ?? (await readPolicyFile(config.policy.path)));
        log.info('policy reloaded', { trigger, snapshot: a.snapshotId, changed: a.changed, rules: a.ruleCount, bundles: composer.bundleIds });
        metrics.policyFileRejected.set(0);
        await publishOwnFileRules();
        await recordApplied();
        return { ok: true, snapshotId: a.snapshotId, changed: a.changed };
      } catch (err) {
        const error = errorText(err);
        if (read === undefined) log.error('policy reload rejected, keeping the previous policy', { trigger, error, snapshot: store.active?.id });
        return { ok: false, error };
      }
    };
    reloading = (reloading ?? Promise.resolve()).then(run, run);
    return reloading;
  };
  const reloadPolicy: SafetyKernelService['reloadPolicy'] = () => applyPolicyFile('sighup');

  /**
   * P203: every reload interval the policy file is read again, and a file whose policy differs
   * from the one in force is applied as a SIGHUP would (an invalid one keeps the previous
   * policy). Kubernetes updates a mounted ConfigMap in place and sends no signal, and Cordum's
   * kernel re-reads its file on each poll (BEHAVIOURS §6: reload via the config watcher). The
   * file is read twice, FILE_SETTLE_MS apart, and applied only when both reads agree, so a file
   * caught while an editor writes it waits for the next interval (a writer pausing longer than
   * that mid-file is not caught: the README asks for an atomic replace, as Kubernetes does).
   * A read or a rejection is logged once per distinct error, not every interval.
   */
  let fileCheckError: string | undefined;
  let fileChecking = false;
  const checkPolicyFile = async (): Promise<void> => {
    const cmp = composer;
    if (config.policySource !== 'file' || state !== 'running' || !cmp || fileChecking) return;
    fileChecking = true;
    try {
      // A read that fails is read again after FILE_SETTLE_MS before it counts: a file caught while
      // a writer truncates and rewrites it in place fails to parse for a moment, and logged its
      // partial content's error beside the real one.
      const first = await readPolicyFile(config.policy.path).catch(async () => {
        await settle();
        return readPolicyFile(config.policy.path);
      });
      if (snapshotId(first) === cmp.fileId) {
        fileCheckError = undefined;
        metrics.policyFileRejected.set(0);
        return;
      }
      await settle();
      const second = await readPolicyFile(config.policy.path);
      if (snapshotId(second) !== snapshotId(first)) {
        log.debug('policy file changed while it was read; checked again at the next interval', { path: config.policy.path });
        return;
      }
      const out = await applyPolicyFile('file_changed', second);
      if (state === 'running') metrics.policyFileRejected.set(out.ok ? 0 : 1);
      if (!out.ok && state === 'running' && out.error !== fileCheckError) log.error('policy reload rejected, keeping the previous policy', { trigger: 'file_changed', error: out.error, snapshot: store?.active?.id });
      fileCheckError = out.ok ? undefined : out.error;
    } catch (err) {
      const error = errorText(err);
      if (error !== fileCheckError) log.error('policy file unreadable or invalid, keeping the previous policy', { path: config.policy.path, error, snapshot: store?.active?.id });
      fileCheckError = error;
      metrics.policyFileRejected.set(1);
    } finally {
      fileChecking = false;
    }
  };

  /**
   * Listened to from the start of start() to the end of stop() (P179): with no listener, Node's
   * default for SIGHUP ends the process, so the signal an operator (or a ConfigMap reloader) sends
   * after editing the file killed a kernel still starting (waiting for NATS, say) or draining its
   * streams at a stop. One that arrives while starting reloads once the kernel is running.
   */
  let hupWhileStarting = false;
  const onSighup = (): void => {
    if (state === 'running') {
      void reloadPolicy();
      return;
    }
    if (state === 'starting') hupWhileStarting = true;
    log.info('SIGHUP received while the kernel is not running', { state, reload: state === 'starting' ? 'once started' : 'none' });
  };

  /** A stored section refused (or unreadable) before the first load succeeded: fall back to the last applied one. */
  const refusedAtStart = async (hash: string | null, error: string): Promise<void> => {
    if (watcher?.ready || fallback) return;
    refusal = error;
    await fallBack(hash, error);
  };

  /** The last refusal logged at error: `<hash>\n<reason>` (P278). */
  let lastRejection: string | undefined;

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
      const error = errorText(err);
      // The watcher retries a refused section at every reload (each poll, each notification):
      // one error per distinct section and reason, the repeats at debug (P278).
      const sig = `${hash ?? ''}\n${error}`;
      if (sig === lastRejection) log.debug('policy bundles still rejected, keeping the previous policy', { error, hash, snapshot: store?.active?.id });
      else log.error('policy bundles rejected, keeping the previous policy', { error, hash, snapshot: store?.active?.id });
      lastRejection = sig;
      await refusedAtStart(hash, error);
      throw err;
    }
    sectionApplied = true;
    refusal = undefined;
    noFallback = undefined;
    lastRejection = undefined;
    if (fallback) {
      log.info('stored safety section applied; no longer serving the fallback section', { hash, fallback_hash: fallback.hash });
      fallback = undefined;
      metrics.bundlesFallback.set(0);
    }
    lastApplied = { section: value ?? null, hash };
    await recordApplied();
  };

  const start = async (): Promise<void> => {
    if (state !== 'new') throw new Error(`safety kernel cannot start: it is ${state}`);
    state = 'starting';
    if (deps.reloadOnSighup !== false) process.on('SIGHUP', onSighup);
    if (config.decisionCache.ttlMs > 0) cache = new DecisionCache({ ...config.decisionCache, now }, metrics.cacheObserver());
    const c = cache;
    redis = createRedis({ ...config.redis, name: `${config.service}:${config.instanceId}`, events: redisLogEvents(log) });
    // P241: timestamps other replicas read (throttle windows, file-rules entries) are taken in Redis's time.
    clock = startClockSync(redis, { log, onMeasure: clockOffsetGauge(deps.registry) });
    await clock.ready;
    const s = new SnapshotStore(redis, (snap) => c?.reset(snap.id));
    store = s;
    // P180: a kernel that evaluates nothing (not ready: the stored section refused, no fallback)
    // exports no snapshot, so CordumSafetyPoliciesDiffer does not fire for it with the wrong fix.
    metrics.reportServingSnapshot(() => (policyComplete() ? (s.active?.id ?? null) : null));
    composer = new PolicyComposer(s, config.initialPolicy, now);
    // Before the first config load: writers refuse a clashing bundle from the moment this kernel runs.
    await publishOwnFileRules();
    fileRulesTimer = setInterval(() => {
      void publishOwnFileRules();
      void checkPolicyFile();
    }, config.configReloadIntervalMs);

    bus = await connectBus({ ...config.nats, name: `${config.service}:${config.instanceId}`, logger: log, registry: deps.registry, waitOnFirstConnect: true });
    await bus.ensureStreams();
    // The watcher's startup load activates file + bundles in one snapshot, so a
    // restart does not record a file-only snapshot first.
    configStore = createConfigStore(redis);
    const w = createConfigWatcher({
      store: configStore,
      bus,
      logger: log,
      registry: deps.registry,
      service: config.service,
      instanceId: config.instanceId,
      pollIntervalMs: config.configReloadIntervalMs,
      sections: { [SAFETY_SECTION]: applySafetySection },
      // A section that cannot even be read (config_corrupt) never reaches the setter: the same
      // start-time fallback as for a section the setter refuses (P114, P122).
      onUnreadable: { [SAFETY_SECTION]: (err) => refusedAtStart(null, errorText(err)) },
    });
    watcher = w;
    await w.start();
    // Bundles unreadable or refused at start, and no fallback: the file's policy is loaded for
    // Explain/ListRules, but Check/Evaluate are refused until the bundles load (P48).
    if (!s.active) await composer.activateCurrent();
    const snap = s.active;
    log.info('policy loaded', {
      snapshot: snap?.id,
      rules: snap?.policy.rules.length,
      source: config.policySource,
      path: config.policy.path,
      bundles: composer.bundleIds,
      complete: policyComplete(),
      fallback: fallback !== undefined,
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
      policyComplete,
      incompleteReason: () => (refusal ? `the stored safety section is refused: ${refusal}` : undefined),
    });
    addGrpcService(server, SafetyKernel, service);
    // P268: gRPC health (each Watch polls every second) and /readyz share one PING per half second.
    const redisAnswers = sharedCheck(() => pingRedis(r, 1000));
    grpcHealth = addHealthService(server, async (name) => {
      if (name !== '' && name !== GRPC_SERVICE_NAME) return undefined;
      return s.active && policyComplete() && (await redisAnswers()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    });
    grpcPort = await bindGrpcServer(server, config.grpcAddr);
    log.info('grpc listening', { addr: formatAddr({ host: config.grpcAddr.host, port: grpcPort }) });

    health = await startHealthServer({
      addr: config.httpAddr,
      registry: deps.registry,
      logger: log,
      checks: [
        { name: 'policy', check: () => s.active !== null },
        { name: 'redis', check: redisAnswers },
        { name: 'nats', check: () => b.connected },
        // D43: the first config load (bundles included) succeeded, or the replica serves the
        // section last applied with its file in place of a stored one it refuses.
        { name: 'config', check: policyComplete },
        // A snapshot activated while Redis was down is recorded as soon as it is back.
        { name: 'snapshot_recorded', check: () => s.ensureRecorded() },
      ],
    });
    if ((state as State) === 'starting') state = 'running';
    if (hupWhileStarting && state === 'running') void reloadPolicy();
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      state = 'stopping';
      const steps: [string, () => Promise<void>][] = [
        ['grpc', async () => (server ? shutdownGrpc(server, service, grpcHealth) : undefined)],
        ['health', async () => health?.close()],
        ['config watcher', async () => watcher?.stop()],
        ['reload', async () => void (await reloading)],
        ['policy updates', async () => composer?.idle()],
        [
          'file rules',
          async () => {
            if (fileRulesTimer) clearInterval(fileRulesTimer);
            await publishing;
            if (redis && composer) await removeFileRules(redis, fileRulesKey, config.instanceId);
          },
        ],
        ['bus', async () => bus?.close()],
        ['redis', async () => {
          clock?.stop();
          if (redis) await closeRedis(redis);
        }],
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
      process.off('SIGHUP', onSighup);
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
