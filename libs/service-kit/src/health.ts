import { type Server } from 'node:http';
import { type AddressInfo } from 'node:net';
import express from 'express';
import { Gauge, type Registry } from 'prom-client';
import { type Logger } from './logger';
import { createExpressServer } from './http-server';
import { valueWithin } from './within';
import { formatAddr, listenHost } from './config';

/** The readiness gauge every service's health server exports (P219). */
export const READY_METRIC = 'cordum_ready';

/** Per registry, the readiness of the health server that serves it now. */
const readyEvaluators = new WeakMap<Registry, () => Promise<{ ready: boolean }>>();

export interface ReadinessCheck {
  name: string;
  check(): Promise<boolean> | boolean;
}

export interface HealthServer {
  /** The bound port (useful with port 0). */
  readonly port: number;
  addCheck(c: ReadinessCheck): void;
  /** Idempotent; also closes keep-alive sockets so shutdown never waits on an idle client. */
  close(): Promise<void>;
}

/**
 * How long a replica that has not been ready yet may fail its checks before it says so at warn
 * (P315): the start itself is no news (its causes have their own lines), but a replica never ready
 * is what `CordumReplicaNotReady` pages for, and its log must name the failing check.
 */
export const NOT_READY_START_GRACE_MS = 30_000;

/** Notes each readiness answer; logs a change once (a probe every few seconds would repeat it). */
export type ReadinessLog = (ready: boolean, failing: string[]) => void;

/**
 * One per process, shared by every path that evaluates readiness (the health server's /readyz and
 * `cordum_ready`, the gateway's API /readyz and gRPC health), so a change is logged once:
 * `not ready` (warn, with `failing`) when a ready replica starts failing, or when one never ready
 * is still failing NOT_READY_START_GRACE_MS after it was created (and again if what fails changes);
 * `ready again` (info) when it recovers.
 */
export function createReadinessLog(log: Logger, o: { startGraceMs?: number; now?: () => number } = {}): ReadinessLog {
  const now = o.now ?? (() => performance.now());
  const grace = o.startGraceMs ?? NOT_READY_START_GRACE_MS;
  const createdAt = now();
  let wasReady = false;
  let everReady = false;
  let reported: string | null = null;
  return (ready, failing) => {
    if (ready) {
      if (!wasReady && everReady) log.info('ready again');
      wasReady = everReady = true;
      reported = null;
      return;
    }
    const what = failing.join(',');
    if (wasReady) log.warn('not ready', { failing });
    else if (!everReady && now() - createdAt >= grace && what !== reported) log.warn('not ready', { failing, never_ready: true, since_start_ms: Math.round(now() - createdAt) });
    else {
      log.debug('readiness failed', { failing });
      wasReady = false;
      return;
    }
    reported = what;
    wasReady = false;
  };
}

export interface HealthServerOptions {
  addr: { host: string; port: number };
  registry: Registry;
  logger: Logger;
  /** Shared with the process's other readiness paths (createReadinessLog); its own otherwise. */
  readinessLog?: ReadinessLog;
  checks?: ReadinessCheck[];
  /** Per-check bound: a hung dependency must turn /readyz into a 503, not a hung probe. Default 2000. */
  checkTimeoutMs?: number;
  /** Add service routes (mounted after /healthz, /readyz, /metrics). */
  extra?: (app: express.Express) => void;
}

/** How long a shared check's answer stands (P268). */
export const SHARED_CHECK_MAX_AGE_MS = 500;

/**
 * A readiness check that asks a dependency (a Redis PING, a JetStream request) shared by every
 * caller (P268): callers at the same time wait for one request, and an answer younger than
 * `maxAgeMs` is given again. /readyz, /metrics' `cordum_ready` and gRPC health (whose Watches,
 * unauthenticated, each poll every second) then cost at most about one request per `maxAgeMs`
 * however many ask. A check that throws counts as false.
 */
export function sharedCheck(check: () => Promise<boolean>, maxAgeMs = SHARED_CHECK_MAX_AGE_MS): () => Promise<boolean> {
  let last: { value: boolean; at: number } | undefined;
  let inFlight: Promise<boolean> | undefined;
  return () => {
    if (last !== undefined && performance.now() - last.at < maxAgeMs) return Promise.resolve(last.value);
    inFlight ??= started(check)
      .then((v) => v === true, () => false)
      .then((value) => {
        last = { value, at: performance.now() };
        inFlight = undefined;
        return value;
      });
    return inFlight;
  };
}

/** `fn()`, with a synchronous throw as a rejection. */
function started<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** Runs one check; throws, false and timeouts all count as "not ready". */
export async function runCheck(c: ReadinessCheck, timeoutMs: number): Promise<boolean> {
  return (await valueWithin(Promise.resolve().then(() => c.check()), timeoutMs)) === true;
}

export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const checks = [...(opts.checks ?? [])];
  const timeoutMs = opts.checkTimeoutMs ?? 2000;
  const log = opts.logger;
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // A change is logged once (createReadinessLog). Within the start's grace a failure is the start
  // itself and stays at debug: the cause has its own lines, and `npm start` reports a service's
  // first warning as the reason it is not ready.
  const noteReady = opts.readinessLog ?? createReadinessLog(log);
  const evaluate = async (): Promise<{ ready: boolean; checks: Record<string, boolean> }> => {
    const results = await Promise.all(checks.map(async (c) => [c.name, await runCheck(c, timeoutMs)] as const));
    const ready = results.every(([, ok]) => ok);
    noteReady(ready, results.filter(([, ok]) => !ok).map(([n]) => n));
    return { ready, checks: Object.fromEntries(results) };
  };
  // P219: `up` stays 1 for a replica that runs but is not ready (no Redis, no NATS, its config or
  // policy not loaded): /metrics answers whatever /readyz says. The same checks, run at each scrape,
  // by the registry's latest health server (a second one, as in a restart in process, takes over).
  readyEvaluators.set(opts.registry, evaluate);
  if (opts.registry.getSingleMetric(READY_METRIC) === undefined) {
    const registry = opts.registry;
    new Gauge({
      name: READY_METRIC,
      help: '1 when this replica is ready (its /readyz checks pass), 0 when not; evaluated at each scrape',
      registers: [registry],
      async collect() {
        const current = readyEvaluators.get(registry);
        this.set(current !== undefined && (await current()).ready ? 1 : 0);
      },
    });
  }
  app.get('/readyz', async (_req, res) => {
    const { ready, checks: byName } = await evaluate();
    res.status(ready ? 200 : 503).json({ ready, checks: byName });
  });
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', opts.registry.contentType);
    res.send(await opts.registry.metrics());
  });
  opts.extra?.(app);

  const server: Server = await new Promise((resolve, reject) => {
    const s = createExpressServer(app).listen(opts.addr.port, listenHost(opts.addr));
    const onError = (err: Error): void => reject(err);
    s.once('error', onError);
    s.once('listening', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
  server.on('error', (err) => log.error('health server error', { err }));
  const port = (server.address() as AddressInfo).port;
  log.info('health server listening', { addr: formatAddr({ host: opts.addr.host, port }) });

  let closing: Promise<void> | undefined;
  return {
    port,
    addCheck: (c) => {
      checks.push(c);
    },
    close: () => {
      if (readyEvaluators.get(opts.registry) === evaluate) readyEvaluators.delete(opts.registry);
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
