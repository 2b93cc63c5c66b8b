import type { Registry } from 'prom-client';
import { subjects, type Bus, type Subscription } from '@cordum/bus';
import type { Logger } from '@cordum/service-kit';
import { clusterNow } from '@cordum/redis';
import { mergeBootstrapFiles, type BootstrapFile } from './bootstrap';
import { sectionHash } from './canonical';
import { DEFAULT_SCOPE, DEFAULT_SCOPE_ID, type Scope } from './keys';
import { ABSENT_HASH_LABEL, configMetrics, type ReloadTrigger } from './metrics';
import { boundedFlush, CONFIG_NOTIFY_FLUSH_BUDGET_MS, decodeConfigChanged, publishConfigChanged } from './notify';
import { removeAppliedReport, writeAppliedReport, type AppliedReport } from './status';
import type { ConfigDocument, ConfigStore } from './store';
import { errorText } from '@cordum/service-kit';

/** Applies one section; throwing keeps the previous hash so the next reload retries. */
export type SectionSetter = (value: unknown, hash: string | null) => void | Promise<void>;

export interface ConfigWatcherOptions {
  store: ConfigStore;
  bus: Bus;
  logger: Logger;
  registry: Registry;
  service: string;
  instanceId: string;
  /** Poll interval for lost notifications (D36); the applied report lives 3× this. */
  pollIntervalMs: number;
  /** Only these sections are hashed, applied and reported (D33: what this service consumes). */
  sections: Record<string, SectionSetter>;
  /**
   * Called, per section, at each reload that finds the stored section unreadable
   * (config_corrupt: a hand-stored `1e999` reads as Infinity), which never reaches its setter.
   * A service that copes with a section it refuses (the safety kernel's start-time fallback)
   * does the same here. Errors it throws are logged, not propagated.
   */
  onUnreadable?: Record<string, (err: Error) => void | Promise<void>>;
  scope?: Scope;
  scopeId?: string;
  /**
   * Bootstrap files merged into the document before the first load (D35, one CAS write for all),
   * retried on every reload until it succeeds; the replica is not ready before. A merge that
   * wrote publishes `sys.config.changed` so the other replicas pick the file up at once.
   */
  bootstrap?: readonly BootstrapFile[];
}

export interface ConfigWatcher {
  /** Subscribes, reports NOT_CHECKED, runs the startup load, starts polling. */
  start(): Promise<void>;
  /**
   * Idempotent. Deletes this replica's applied report, so a replica scaled down or restarted
   * cleanly leaves the status view at once instead of showing DRIFTED until the report expires
   * (3 poll intervals; only a crashed replica's report waits for that).
   */
  stop(): Promise<void>;
  /** True after the first load in which every setter succeeded (for /readyz). */
  readonly ready: boolean;
  /** Resolves at the same moment `ready` turns true. */
  readonly readyAfterFirstLoad: Promise<void>;
  /** Coalesced reload; resolves when it (and any reload queued behind it) finished. Never rejects: a failure is logged. */
  reload(trigger: ReloadTrigger): Promise<void>;
  /** Hashes currently applied per section (absent before the first successful apply). */
  appliedHashes(): Record<string, string | null>;
  /** Revision of the document read by the last successful reload (-1 before). */
  readonly revision: number;
}

type State = 'new' | 'running' | 'stopped';

/** First delay of the retries before the first successful load (then doubled, up to MAX_RETRY_MS). */
const FIRST_RETRY_MS = 1_000;
/** Longest delay between those retries (each is one GET): ready within about 5 s of the cause going, however long it lasted. */
const MAX_RETRY_MS = 5_000;

export function createConfigWatcher(o: ConfigWatcherOptions): ConfigWatcher {
  if (!(o.pollIntervalMs > 0)) throw new Error('createConfigWatcher: pollIntervalMs must be > 0');
  const scope = o.scope ?? DEFAULT_SCOPE;
  const scopeId = o.scopeId ?? DEFAULT_SCOPE_ID;
  const log = o.logger.child({ component: 'config-watcher' });
  const metrics = configMetrics(o.registry);
  const reportKey = o.store.keys.applied(o.service, o.instanceId);
  const reportTtlMs = 3 * o.pollIntervalMs;
  const sections = Object.entries(o.sections).sort(([a], [b]) => a.localeCompare(b));

  let state: State = 'new';
  let lastReport: Promise<void> | undefined;
  let stopPromise: Promise<void> | undefined;
  let sub: Subscription | undefined;
  let timer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  const applied = new Map<string, string | null>();
  let revision = -1;
  let ready = false;
  let resolveReady!: () => void;
  const readyAfterFirstLoad = new Promise<void>((r) => (resolveReady = r));

  // Coalescing: at most one reload running and one queued; every request during a run folds into
  // the queued one (seed 001: notification bursts must not become reload storms).
  let inFlight: Promise<void> | null = null;
  let queued: ReloadTrigger | null = null;

  let bootstrapped = (o.bootstrap ?? []).length === 0;
  // One error log per distinct problem, not one per reload (a corrupt section read every poll
  // interval by every replica must not become a log storm); repeats go to debug.
  const failingSections = new Map<string, string | null>();
  const lastError = new Map<'read' | 'bootstrap', string>();
  function logOnce(kind: 'read' | 'bootstrap', msg: string, err: unknown, fields: Record<string, unknown>): void {
    const sig = errorText(err);
    if (lastError.get(kind) === sig) {
      log.debug(msg, { ...fields, err, repeated: true });
      return;
    }
    lastError.set(kind, sig);
    log.error(msg, { ...fields, err });
  }

  /** D35 merge before the first load; false when it must be retried (not ready). */
  async function bootstrapOnce(trigger: ReloadTrigger): Promise<boolean> {
    if (bootstrapped) return true;
    try {
      const r = await mergeBootstrapFiles(o.store, o.bootstrap ?? [], { scope, scopeId });
      bootstrapped = true;
      lastError.delete('bootstrap');
      for (const f of r.files) {
        if (f.merged) log.info('config bootstrap file merged', { section: f.section, source: f.source, file_hash: f.fileHash, revision: r.revision });
        else log.info('config bootstrap file unchanged since its last merge, live config kept', { section: f.section, source: f.source, file_hash: f.fileHash });
      }
      // Not awaited: with NATS frozen the reload would wait on the notification's flush, and
      // every poll queued behind it, though the poll is what covers NATS trouble.
      if (r.written) notify(r.revision);
      return true;
    } catch (err) {
      logOnce('bootstrap', 'config bootstrap merge failed, will retry on next reload', err, { trigger });
      return false;
    }
  }

  /** Tells the other replicas about a bootstrap merge; never awaited, a failure is logged. */
  function notify(rev: number): void {
    void publishConfigChanged(o.bus, { scope, scopeId, revision: rev, senderId: o.instanceId }).catch((err: unknown) =>
      log.warn('config change publish after bootstrap merge failed; other replicas will poll', { err: errorText(err), revision: rev }),
    );
  }

  function report(checked: boolean): Promise<void> {
    const r: AppliedReport = {
      service: o.service,
      instance_id: o.instanceId,
      revision: Math.max(revision, 0),
      hashes: Object.fromEntries(applied),
      reported_at: new Date(clusterNow()).toISOString(),
      checked,
    };
    const write = writeAppliedReport(o.store.redis, reportKey, r, reportTtlMs, o.store.keys.appliedIndex());
    lastReport = write.catch(() => undefined);
    return write;
  }

  async function read(trigger: ReloadTrigger): Promise<ConfigDocument | null> {
    try {
      return await o.store.get(scope, scopeId);
    } catch (err) {
      logOnce('read', 'config reload failed, keeping applied config', err, { trigger });
      return null;
    }
  }

  /**
   * A merged file leaves its hash in meta (D35), and no write through the API removes it: a
   * document without it has lost the merge, because Redis came back empty (a restart without
   * persistence, a failover to an empty replica) or someone deleted the key. Applying that
   * document would drop what the files configure (the scheduler's routing: every job would
   * park), so the files are merged again first, as at a first start.
   */
  const lostBootstrap = (doc: ConfigDocument): readonly string[] =>
    bootstrapped ? (o.bootstrap ?? []).filter((f) => doc.meta[f.fileHashMetaKey] === undefined).map((f) => f.section) : [];

  async function reloadOnce(trigger: ReloadTrigger): Promise<void> {
    metrics.reloads.inc({ trigger });
    if (!(await bootstrapOnce(trigger))) return;
    let doc = await read(trigger);
    if (!doc) return;
    const lost = lostBootstrap(doc);
    if (lost.length > 0) {
      log.warn('config document has lost its bootstrap merge (Redis emptied or the key deleted), merging the files again', { sections: lost, revision: doc.revision, trigger });
      bootstrapped = false;
      if (!(await bootstrapOnce(trigger))) return;
      doc = await read(trigger);
      if (!doc) return;
    }
    if (lastError.delete('read')) log.info('config readable again', { revision: doc.revision });
    let allOk = true;
    for (const [section, setter] of sections) {
      // A section with no hash (config_corrupt: a hand-stored `1e999` reads as Infinity) is
      // refused like one its setter refuses: the rest of the document still applies.
      let hash: string | null | undefined;
      try {
        hash = sectionHash(doc.data, section);
        if (applied.has(section) && applied.get(section) === hash) {
          failingSections.delete(section);
          continue;
        }
        await setter(doc.data[section] ?? undefined, hash);
      } catch (err) {
        allOk = false;
        // Repeats are told apart by hash, or for an unhashable section by the reason.
        const sig = hash === undefined ? `unreadable: ${errorText(err)}` : hash;
        const fields = { section, hash, applied_hash: applied.get(section), revision: doc.revision, err };
        if (failingSections.has(section) && failingSections.get(section) === sig) log.debug('config section still rejected, keeping applied config', fields);
        else log.error('config section apply failed, will retry on next reload', fields);
        failingSections.set(section, sig);
        const unreadable = hash === undefined ? o.onUnreadable?.[section] : undefined;
        if (unreadable) {
          try {
            await unreadable(err instanceof Error ? err : new Error(String(err)));
          } catch (hookErr) {
            log.error('config section unreadable hook failed', { section, err: hookErr });
          }
        }
        continue;
      }
      failingSections.delete(section);
      const old = applied.get(section);
      if (applied.has(section)) metrics.appliedInfo.remove({ section, hash: old ?? ABSENT_HASH_LABEL });
      metrics.appliedInfo.set({ section, hash: hash ?? ABSENT_HASH_LABEL }, 1);
      metrics.applies.inc({ section });
      applied.set(section, hash);
      log.info('config section applied', { section, hash, revision: doc.revision, trigger });
    }
    revision = doc.revision;
    const firstOk = allOk && !ready;
    try {
      // Before the first fully successful load the replica stays NOT_CHECKED: a partial apply
      // must not look IN_SYNC for sections it never applied.
      await report(ready || allOk);
    } catch (err) {
      log.warn('config applied report write failed', { err });
    }
    if (firstOk) {
      ready = true;
      resolveReady();
    }
  }

  async function drain(first: ReloadTrigger): Promise<void> {
    let next: ReloadTrigger | null = first;
    try {
      while (next !== null && state !== 'stopped') {
        try {
          await reloadOnce(next);
        } catch (err) {
          // Never a rejection: the poll, notification and retry callers do not await a reload,
          // and service-kit stops the process on an unhandled one (every replica, every poll).
          log.error('config reload failed, keeping applied config', { trigger: next, err });
        }
        next = queued;
        queued = null;
      }
    } finally {
      inFlight = null;
    }
  }

  function reload(trigger: ReloadTrigger): Promise<void> {
    if (state === 'stopped') return Promise.resolve();
    if (inFlight) {
      queued ??= trigger;
      return inFlight;
    }
    inFlight = drain(trigger);
    return inFlight;
  }

  function onNotification(data: Uint8Array): void {
    let change;
    try {
      change = decodeConfigChanged(data);
    } catch (err) {
      // Still a hint that something changed; reloading from Redis is always safe.
      log.warn('undecodable config change notification, reloading anyway', { err });
    }
    if (change && change.scope !== '' && (change.scope !== scope || change.scopeId !== scopeId)) {
      log.debug('config change for another scope ignored', { ...change });
      return;
    }
    log.info('config change notification received, reloading', { revision: change?.revision });
    void reload('notification');
  }

  async function start(): Promise<void> {
    if (state !== 'new') throw new Error(`config watcher: start() in state ${state}`);
    state = 'running';
    // Subscribe before the first read so a change written during startup is never missed.
    sub = o.bus.subscribe(subjects.configChanged, onNotification);
    try {
      await boundedFlush(o.bus, CONFIG_NOTIFY_FLUSH_BUDGET_MS);
    } catch (err) {
      // NATS frozen or unreachable: start on the poll rather than wait for nats.js to give up.
      log.warn('config change subscription not confirmed by NATS; relying on the poll until notifications arrive', { err: errorText(err) });
    }
    if (state !== 'running') return; // stopped while subscribing: write no report
    try {
      await report(false);
    } catch (err) {
      log.warn('config applied report write failed', { err });
    }
    await reload('startup');
    // stop() may have come while starting: it must not be followed by a poll timer.
    if (state !== 'running') return;
    timer = setInterval(() => void reload('poll'), o.pollIntervalMs);
    retryUntilReady(FIRST_RETRY_MS);
  }

  /**
   * A replica is not ready before its first successful load (Redis down at start, a section it
   * refuses), so that load is retried on a backoff (1 s, 2 s, 4 s, then every 5 s; never less often
   * than the poll), not only at the next poll: a replica started during a Redis outage is ready
   * within about 5 s of Redis coming back, not up to a poll interval later.
   */
  function retryUntilReady(delayMs: number): void {
    if (ready || state !== 'running') return;
    const wait = Math.min(delayMs, MAX_RETRY_MS, o.pollIntervalMs);
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void reload('retry').then(() => retryUntilReady(wait * 2));
    }, wait);
  }

  async function doStop(): Promise<void> {
    state = 'stopped';
    if (timer) clearInterval(timer);
    clearTimeout(retryTimer);
    sub?.unsubscribe();
    queued = null;
    await inFlight;
    await lastReport; // a report still being written (a stop during start) must not land after the delete
    await removeAppliedReport(o.store.redis, reportKey, o.store.keys.appliedIndex()).catch((err: unknown) =>
      log.warn('config applied report not removed; it expires on its own', { err: errorText(err) }),
    );
  }

  return {
    start,
    stop: () => (stopPromise ??= doStop()),
    get ready() {
      return ready;
    },
    readyAfterFirstLoad,
    reload,
    appliedHashes: () => Object.fromEntries(applied),
    get revision() {
      return revision;
    },
  };
}
