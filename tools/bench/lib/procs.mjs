// Child processes of the bench: every one is registered here so that a normal
// end, an error or Ctrl-C stops all of them (no orphans), servers last.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const live = new Set();
const tempDirs = new Set();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Ports come from below Linux's ephemeral range (32768–60999), like the test harness's
// (libs/testing/src/ports.ts, which uses 24000–32000): a `listen(0)` port is an ephemeral one,
// and any outgoing connection on the machine can take it between the probe and the service's
// bind (EADDRINUSE). The bench uses its own band (15000–19999) so it never races the tests it
// runs beside, nor the npm-start test's stack (20080–23297).
const PORT_LOW = 15_000;
const PORT_HIGH = 20_000;
const handedOut = new Set();

function canBind(port) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW));
    if (handedOut.has(port) || !(await canBind(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`freePort: no free port in ${PORT_LOW}–${PORT_HIGH} after 200 tries`);
}

export function canConnect(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const s = connect({ port, host });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export async function waitUntil(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

/** Spawns a registered child; `tail` keeps its last output lines for error messages. */
/**
 * The variables the services read: a bench child gets only those the bench sets, never the
 * caller's (an `export REDIS_CLUSTER_ADDRESSES=…` for `npm start` would send every bench job
 * to that cluster). Kept in step with libs/testing's SERVICE_ENV_RE.
 */
const SERVICE_ENV_RE = /^(REDIS_|NATS_|CORDUM_|SAFETY_|SCHEDULER_|GATEWAY_|WORKER_|AUDIT_|CAP_|API_|RATE_LIMIT|DLQ_|JOB_TTL$|TENANT_ID$|POOL_CONFIG_PATH$|TIMEOUT_CONFIG_PATH$)/;

export function start(name, cmd, args, { env = {}, cwd } = {}) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !SERVICE_ENV_RE.test(k)));
  const child = spawn(cmd, args, { cwd, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { name, child, pid: child.pid, tail: [], exit: null };
  const keep = (b) => {
    for (const l of b.toString('utf8').split('\n')) if (l) proc.tail.push(l);
    if (proc.tail.length > 40) proc.tail.splice(0, proc.tail.length - 40);
    if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${b}`);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  proc.exited = new Promise((r) => child.on('exit', (code, signal) => { proc.exit = { code, signal }; live.delete(proc); r(proc.exit); }));
  proc.running = () => proc.exit === null;
  proc.stop = async (graceMs = 10_000) => {
    if (proc.exit) return proc.exit;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const e = await proc.exited;
    clearTimeout(t);
    return e;
  };
  live.add(proc);
  return proc;
}

/** redis-server on a free port; `extraArgs` are further command-line options (`--hash-max-listpack-value 1024`). */
export async function startRedis(extraArgs = []) {
  const port = await freePort();
  const dir = tempDir('bench-redis-');
  const p = start(`redis:${port}`, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs]);
  await waitUntil(async () => { if (!p.running()) throw new Error(`redis-server exited: ${p.tail.join(' | ')}`); return canConnect(port); }, 10_000, 'redis-server');
  return { port, url: `redis://127.0.0.1:${port}`, proc: p, stop: () => p.stop(5000) };
}

/** nats-server -js with its monitoring port (for /varz message counters). */
export async function startNats() {
  const port = await freePort();
  const monitorPort = await freePort();
  const dir = tempDir('bench-nats-');
  const p = start(`nats:${port}`, 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort), '-js', '-sd', dir]);
  await waitUntil(async () => { if (!p.running()) throw new Error(`nats-server exited: ${p.tail.join(' | ')}`); return (await canConnect(port)) && canConnect(monitorPort); }, 10_000, 'nats-server');
  return { port, monitorPort, url: `nats://127.0.0.1:${port}`, proc: p, stop: () => p.stop(5000) };
}

/** Stops every live child, given names first (intake before servers), then the rest. */
export async function stopAll(firstPrefixes = []) {
  const all = [...live];
  const rank = (p) => { const i = firstPrefixes.findIndex((f) => p.name.startsWith(f)); return i < 0 ? firstPrefixes.length : i; };
  const groups = new Map();
  for (const p of all) { const r = rank(p); if (!groups.has(r)) groups.set(r, []); groups.get(r).push(p); }
  for (const r of [...groups.keys()].sort((a, b) => a - b)) await Promise.all(groups.get(r).map((p) => p.stop()));
}

export function removeTempDirs() {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

let cleaning = null;
/** Installs Ctrl-C / error handlers; `cleanup` runs once, then the process exits. */
export function installCleanup(cleanup) {
  const run = (code, why) => {
    if (cleaning) return cleaning;
    if (why) process.stderr.write(`\nbench: ${why}; stopping everything\n`);
    cleaning = (async () => {
      try { await cleanup(); } catch (e) { process.stderr.write(`bench: cleanup: ${e?.stack ?? e}\n`); }
      process.exit(code);
    })();
    return cleaning;
  };
  process.on('SIGINT', () => void run(130, 'interrupted'));
  process.on('SIGTERM', () => void run(143, 'terminated'));
  process.on('uncaughtException', (e) => void run(1, `error: ${e?.stack ?? e}`));
  process.on('unhandledRejection', (e) => void run(1, `error: ${e?.stack ?? e}`));
  // Last resort if we exit without the async cleanup: never leave children behind.
  process.on('exit', () => { for (const p of live) try { p.child.kill('SIGKILL'); } catch { /* gone */ } removeTempDirs(); });
  return run;
}
