// The Cordum stack as real processes from dist/apps, configured by env alone
// (CONTRACT §1), on free ports against the bench's own Redis and NATS.
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, start, waitUntil } from './procs.mjs';

export const API_KEY = 'bench-admin-key-0123456789';
/** The job every stack load submits: an echo job through POST /api/v1/jobs with the bench's admin key. */
export const STACK_REQUEST = { path: '/api/v1/jobs', headers: { 'x-api-key': API_KEY }, body: JSON.stringify({ topic: 'job.echo', prompt: 'hello bench' }) };
/** How `collect` reads a stack job's record (`cordum` from loadCordum: the job-store's key format and terminal states). */
export function stackRecords(cordum) {
  return { key: (id) => cordum.jobKeys.meta(id), fields: ['state', 'createdAt', 'dispatchedAt', 'finishedAt'], terminal: cordum.TERMINAL_STATES };
}
export const SERVICES = ['safety-kernel', 'scheduler', 'api-gateway', 'echo-worker'];
/**
 * The V8 heap setting the services are deployed with (deploy/Dockerfile; docs/performance.md,
 * "Memory"): with V8's default limit (a share of the host's RAM) a service under sustained load
 * lets promoted garbage grow its old space to ~100 MB and its RSS to ~200 MB although its live
 * heap stays under 30 MB; a 512 MB limit makes V8 collect early and keeps RSS near 130 MB.
 */
export const SERVICE_NODE_OPTIONS = '--max-old-space-size=512';

/**
 * dist/apps/<service>/main.js (CONTRACT §1); main.cjs when a project's build still emits that name.
 * `distDir` replaces this checkout's `dist/` (`--ab` passes a copy of another build's).
 */
export function bundlePath(root, service, distDir = join(root, 'dist')) {
  const js = join(distDir, 'apps', service, 'main.js');
  const cjs = join(distDir, 'apps', service, 'main.cjs');
  return !existsSync(js) && existsSync(cjs) ? cjs : js;
}

export function missingBundles(root, distDir = undefined) {
  return SERVICES.filter((s) => !existsSync(bundlePath(root, s, distDir)));
}

/** True when the kernel bundle reads SAFETY_DECISION_CACHE_TTL (the cached Check run is skipped otherwise). */
export function kernelHasDecisionCache(root) {
  return readFileSync(bundlePath(root, 'safety-kernel'), 'utf8').includes('SAFETY_DECISION_CACHE_TTL');
}

async function readyz(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

/**
 * Starts kernels, schedulers, gateways and echo workers; resolves once every
 * process answers /readyz. `kernelEnv` lets a run switch the decision cache.
 */
export async function startStack(root, { redisUrl, natsUrl, schedulers = 1, gateways = 1, workers = 1, workerParallel = 256, kernelEnv = {}, logLevel = 'warn', schedulerEnv = {}, log = () => undefined, cpuProfDir = null, extraEnv = {}, nodeArgs = [], distDir = undefined }) {
  const common = {
    REDIS_URL: redisUrl,
    NATS_URL: natsUrl,
    CORDUM_LOG_LEVEL: logLevel,
    // The bench measures the job path, not the limiter: lift the per-tenant budget.
    API_RATE_LIMIT_RPS: '1000000',
    API_RATE_LIMIT_BURST: '1000000',
    // Bundles copied out of the checkout (--ab) still load their packages from it.
    ...(distDir ? { NODE_PATH: join(root, 'node_modules') } : {}),
    ...extraEnv,
  };
  const procs = [];
  const health = new Map();
  const spawnSvc = (service, name, env, healthPort) => {
    // --cpu-prof: V8 writes a .cpuprofile per process when it exits (the services exit on SIGTERM).
    const prof = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${join(cpuProfDir, name)}`] : [];
    const p = start(name, process.execPath, [...nodeArgs, ...prof, bundlePath(root, service, distDir)], { env: { ...common, CORDUM_INSTANCE_ID: name, ...env }, cwd: tmpdir() });
    p.service = service;
    procs.push(p);
    health.set(p, healthPort);
    return p;
  };

  const kGrpc = await freePort();
  const kHttp = await freePort();
  const kernelAddr = `127.0.0.1:${kGrpc}`;
  spawnSvc('safety-kernel', 'safety-kernel-1', { SAFETY_KERNEL_GRPC_ADDR: kernelAddr, SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${kHttp}`, ...kernelEnv }, kHttp);

  const schedulerMetricsUrls = [];
  for (let i = 1; i <= schedulers; i++) {
    const port = await freePort();
    schedulerMetricsUrls.push(`http://127.0.0.1:${port}/metrics`);
    spawnSvc('scheduler', `scheduler-${i}`, { SCHEDULER_HTTP_ADDR: `127.0.0.1:${port}`, SAFETY_KERNEL_ADDR: kernelAddr, ...schedulerEnv }, port);
  }
  const gatewayUrls = [];
  for (let i = 1; i <= gateways; i++) {
    const port = await freePort();
    spawnSvc('api-gateway', `api-gateway-${i}`, {
      CORDUM_API_KEY: API_KEY,
      GATEWAY_HTTP_ADDR: `127.0.0.1:${port}`,
      GATEWAY_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
      GATEWAY_METRICS_ADDR: `127.0.0.1:${await freePort()}`,
      SAFETY_KERNEL_ADDR: kernelAddr,
    }, port);
    gatewayUrls.push(`http://127.0.0.1:${port}`);
  }
  const stop = async () => {
    // Intake first, then workers (their last results still recorded), schedulers and the kernel (P209).
    for (const svc of ['api-gateway', 'echo-worker', 'scheduler', 'safety-kernel']) {
      await Promise.all(procs.filter((p) => p.service === svc).map((p) => p.stop()));
    }
  };
  const ready = (list) => Promise.all(list.map((p) => waitUntil(async () => {
    if (!p.running()) throw new Error(`${p.name} exited ${JSON.stringify(p.exit)}: ${p.tail.slice(-8).join(' | ')}`);
    return readyz(health.get(p));
  }, 60_000, `${p.name} /readyz`)));
  try {
    await ready([...procs]);
    // Workers last: their first heartbeat is sent at start, and one sent before
    // a scheduler subscribed is only repeated a heartbeat interval (5 s) later.
    const started = [];
    for (let i = 1; i <= workers; i++) {
      const port = await freePort();
      started.push(spawnSvc('echo-worker', `echo-worker-${i}`, { WORKER_ID: `bench-echo-${i}`, WORKER_HTTP_ADDR: `127.0.0.1:${port}`, WORKER_MAX_PARALLEL: String(workerParallel) }, port));
    }
    await ready(started);
    log(`  ${procs.length} processes ready`);
    // Ready processes are not enough: a job submitted before the workers'
    // first heartbeat finds no worker and waits for a retry. Wait until every
    // gateway lists all workers online.
    await waitUntil(async () => {
      const counts = await Promise.all(gatewayUrls.map(async (u) => {
        try {
          const res = await fetch(`${u}/api/v1/workers`, { headers: { 'x-api-key': API_KEY }, signal: AbortSignal.timeout(2000) });
          if (res.status === 404) return Infinity; // route not there yet: nothing to wait for
          if (res.status !== 200) return 0;
          const body = await res.json();
          return (body.items ?? []).filter((w) => w.online !== false).length;
        } catch {
          return 0;
        }
      }));
      return counts.every((n) => n >= workers);
    }, 30_000, `${workers} worker(s) listed by GET /api/v1/workers`);
  } catch (e) {
    await stop();
    throw e;
  }
  return { procs, gatewayUrls, schedulerMetricsUrls, kernelAddr, stop };
}
