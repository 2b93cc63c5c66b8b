#!/usr/bin/env node
// `npm start`: the whole stack on one machine as local processes (usage: HELP below).
//
// Redis and NATS: reuses the servers reachable at REDIS_URL / NATS_URL
// (default 127.0.0.1:6379 / :4222, plus the port offset; a NATS_URL comma list
// is checked at its first entry; with REDIS_CLUSTER_ADDRESSES the cluster is
// used as it is); otherwise starts redis-server and `nats-server -js` from PATH
// with data under .cordum/ (.cordum/<kind>-<port> with a port offset). A NATS that
// is reused must have JetStream: one without it is refused before any service starts.
// Without node_modules (a fresh clone before `npm install`) it stops at once, naming
// the install command. A password in a URL it prints is shown as <redacted>.
//
// Every child (services, and the servers started here) runs in its own process
// group, so a terminal's Ctrl-C (SIGINT to the foreground group) reaches only this
// script, which then stops them in order: intake first (gateways), then
// workers, schedulers, kernels, and last the servers it started, so in-flight jobs
// finish and a scheduler still runs to record their results (P209). SIGTERM, SIGHUP and an unexpected error do the
// same; only SIGKILL leaves children behind.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pipeChildToLog } from './log-pipe.mjs';
import { bundleOlderThanSources } from './stale.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const table = JSON.parse(readFileSync(join(root, 'tools/stack/services.json'), 'utf8'));
const stateDir = join(root, '.cordum');

const HELP = `Usage: npm start [-- options]

Runs the whole stack on this machine: Redis and NATS (reused when reachable at
REDIS_URL / NATS_URL, else started from PATH with data under .cordum/), then
safety-kernel, scheduler, api-gateway and echo-worker from dist/apps/*/main.js.
Prints the gateway URL, a dev API key and a curl example once everything is up.

Options:
  --replicas svc=n[,svc=n...]   replicas per service (default 1 each), e.g.
                                --replicas scheduler=2,api-gateway=2,echo-worker=3;
                                replica k binds every port + 100 x (k - 1)
  --port-offset n               add n (0..14000) to every port, Redis's and NATS's
                                included unless REDIS_URL / NATS_URL say otherwise,
                                for a second stack; its logs go to .cordum/logs-p<n>/
  --build                       rebuild dist/ first (default: a bundle missing or older than its sources)
  --ready-timeout s             seconds each service may take to answer /readyz
                                (default 60); past it, npm start names the failing
                                checks and the service's first warning, and stops
  -h, --help                    print this help

Logs: .cordum/logs/<service>-<k>.log (with an offset: .cordum/logs-p<n>/), each
moved to <name>.log.1 at the next start. The services read config/safety.yaml,
config/pools.yaml and config/timeouts.yaml from the repository unless
SAFETY_POLICY_PATH, POOL_CONFIG_PATH or TIMEOUT_CONFIG_PATH are set.

Ctrl-C (or SIGTERM) stops the gateways first, then the workers, schedulers and
kernels, then the servers it started. The pids of a running stack are in
.cordum/stack.pids (.cordum/stack-p<n>.pids); a start over a stack still running
names them.
`;

/** A fatal condition: one line on stderr, then every child started so far is stopped. */
class Fatal extends Error {
  constructor(message, code = 2) {
    super(message);
    this.code = code;
  }
}

function fail(msg, code = 2) {
  throw new Fatal(msg, code);
}

function parseArgs(argv) {
  const opts = { replicas: {}, portOffset: 0, build: false, readyTimeoutS: 60 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--replicas') {
      for (const part of next().split(',').filter(Boolean)) {
        const [name, n] = part.split('=');
        const svc = table.services.find((s) => s.name === name);
        if (!svc) fail(`--replicas: unknown service "${name}" (known: ${table.services.map((s) => s.name).join(', ')})`);
        const count = Number(n);
        if (!Number.isInteger(count) || count < 0 || count > svc.maxReplicas) fail(`--replicas ${name}=${n}: expected 0..${svc.maxReplicas}`);
        if (count > 0 && !inRepo(name)) fail(`--replicas ${name}=${n}: ${name} is not built yet in this repository (there is no apps/${name}); leave it out`);
        opts.replicas[name] = count;
      }
    } else if (a === '--port-offset') {
      opts.portOffset = Number(next());
      if (!Number.isInteger(opts.portOffset) || opts.portOffset < 0 || opts.portOffset > 14000) fail('--port-offset: expected 0..14000 (the highest port, 50051 + offset + replicas, must stay below 65536)');
    } else if (a === '--ready-timeout') {
      opts.readyTimeoutS = Number(next());
      if (!Number.isInteger(opts.readyTimeoutS) || opts.readyTimeoutS < 1 || opts.readyTimeoutS > 3600) fail('--ready-timeout: expected whole seconds, 1..3600');
    } else if (a === '--build') opts.build = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else fail(`unknown argument "${a}" (try --help)`);
  }
  return opts;
}

const bundleOf = (name) => join(root, 'dist/apps', name, 'main.js');
/** A service this repository has sources for (or a bundle of): one `--build` can make. */
const inRepo = (name) => existsSync(join(root, 'apps', name, 'src/main.ts')) || existsSync(bundleOf(name));

/** host:port, :port or [v6]:port (the services' REDIS_CLUSTER_ADDRESSES entries). */
function parseHostPort(raw) {
  const m = /^(?:\[([^\]]+)\]|([^:\s/]*)):(\d{1,5})$/.exec(raw);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port: Number(m[3]) };
}

/** A URL with one of `schemes` and a host, as the services require; else undefined. */
function parseUrl(raw, schemes, defPort) {
  let u;
  try {
    u = new URL(raw);
  } catch {
    return undefined;
  }
  if (!schemes.includes(u.protocol.replace(/:$/, '')) || u.hostname === '') return undefined;
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || defPort) };
}

/**
 * `redis://:pw@host` → `redis://:<redacted>@host`, `nats://user:pw@host` → `nats://user:<redacted>@host`,
 * `nats://token@host` → `nats://<redacted>@host`, in any text, parseable or not (as libs/service-kit
 * does for the services): a password from the environment is never echoed.
 */
function redact(text) {
  // Greedy to the last `@` of the line: a password with a comma or a space in it ended the match
  // there, and the rest of it was printed (P299).
  return String(text).replace(/(:\/\/)(.*)@/g, (_, scheme, info) => {
    const colon = info.indexOf(':');
    const user = colon >= 0 ? info.slice(0, colon) : '';
    return `${scheme}${colon >= 0 && !/[\s,]/.test(user) ? `${user}:<redacted>` : '<redacted>'}@`;
  });
}

/**
 * The secret in the file `<name>_FILE` names (trailing line breaks dropped, as the services read
 * it), or undefined when it is unset; both set, or a file that cannot be read, stops the start.
 */
function secretFromFile(name) {
  const path = process.env[`${name}_FILE`];
  if (!path) return undefined;
  if (process.env[name]) fail(`${name} and ${name}_FILE are both set: set one`);
  try {
    const value = readFileSync(path, 'utf8').replace(/[\r\n]+$/, '');
    if (value === '') fail(`${name}_FILE names an empty file ${JSON.stringify(path)}`);
    return value;
  } catch (e) {
    if (e instanceof Fatal) throw e;
    fail(`${name}_FILE cannot read ${JSON.stringify(path)}: ${e.code ?? e.message}`);
  }
}

/** A variable's value as a message quotes it: JSON-quoted, its passwords redacted. */
const quoted = (value) => JSON.stringify(redact(value ?? ''));

/**
 * Checks REDIS_URL, NATS_URL (a comma list) and REDIS_CLUSTER_ADDRESSES before anything
 * starts: a malformed one is one line naming the variable and the expected form (exit 2),
 * never a probe of some default address.
 */
function readEnvAddresses(offset) {
  const env = process.env;
  // REDIS_URL_FILE (a mounted secret) stands for REDIS_URL, as in the services (libs/service-kit).
  const redisFromFile = secretFromFile('REDIS_URL');
  const redisUrl = env.REDIS_URL || redisFromFile || `redis://127.0.0.1:${6379 + offset}`;
  const redis = parseUrl(redisUrl, ['redis', 'rediss'], 6379);
  if (!redis) fail(redisFromFile ? `REDIS_URL_FILE: the file does not hold a Redis URL: expected redis://host:port (or rediss://host:port)` : `REDIS_URL=${quoted(env.REDIS_URL)} is not a Redis URL: expected redis://host:port (or rediss://host:port)`);
  const natsUrl = env.NATS_URL || `nats://127.0.0.1:${4222 + offset}`;
  const natsList = natsUrl.split(',').map((s) => s.trim()).filter(Boolean);
  const nats = natsList.map((u) => parseUrl(u, ['nats', 'tls', 'ws', 'wss'], 4222));
  if (nats.length === 0 || nats.some((n) => !n)) {
    const bad = natsList[nats.findIndex((n) => !n)] ?? '';
    fail(`NATS_URL=${quoted(env.NATS_URL)} is not a NATS URL list (bad entry ${quoted(bad)}): expected nats://host:port, or a comma list of them`);
  }
  const cluster = (env.REDIS_CLUSTER_ADDRESSES || '').split(',').map((s) => s.trim()).filter(Boolean);
  const clusterAddrs = cluster.map((a) => (/^rediss?:\/\//.test(a) ? parseUrl(a, ['redis', 'rediss'], 6379) : parseHostPort(a)));
  const badNode = cluster.find((_, i) => !clusterAddrs[i]);
  if (badNode !== undefined) fail(`REDIS_CLUSTER_ADDRESSES=${quoted(env.REDIS_CLUSTER_ADDRESSES)} has a bad entry ${quoted(badNode)}: expected host:port,host:port,...`);
  return { redisUrl, redis, natsUrl, nats: nats[0], natsFirst: natsList[0], cluster, clusterAddrs };
}

const tcpOpen = (host, port) =>
  new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(1000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('timeout', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(false));
  });

/** True when nothing listens on 127.0.0.1:port (a bind succeeds), as the services will bind it. */
const portFree = (port) =>
  new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolve(true)));
  });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Thrown out of the start sequence once a stop has begun (a signal during start). */
class Stopping extends Error {}

/** `explain()` says why, for the one line printed at a timeout (P209: not a bare stack trace). */
async function waitUntil(fn, timeoutMs, what, explain = async () => '') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (stopping) throw new Stopping();
    if (await fn()) return;
    await sleep(200);
  }
  fail(`${what} not ready within ${timeoutMs / 1000} s${await explain()}`, 1);
}

const children = []; // { name, service, child, healthPort }
const infra = []; // servers we started: { name, child }
let logDir = join(stateDir, 'logs');

/**
 * This stack's log files at start: each <name>.log becomes <name>.log.1 (replacing an
 * older one), so a log holds one run. Runs only once the ports were found free: another
 * stack on the same offset keeps its files.
 */
function rotateLogs() {
  mkdirSync(logDir, { recursive: true });
  for (const f of readdirSync(logDir)) if (f.endsWith('.log')) renameSync(join(logDir, f), join(logDir, `${f}.1`));
}

function spawnLogged(name, cmd, args, env) {
  if (stopping) throw new Stopping();
  mkdirSync(logDir, { recursive: true });
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  // detached: its own process group (and session), so a terminal's SIGINT reaches only this
  // script, which stops the children in order. Never unref'd: stopAll waits for each exit.
  const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  pipeChildToLog(child, log);
  const tail = [];
  const keep = (b) => {
    for (const l of b.toString().split('\n')) {
      if (!l) continue;
      tail.push(l);
      child.firstProblem ??= problemOf(l);
    }
    if (tail.length > 20) tail.splice(0, tail.length - 20);
  };
  child.firstProblem = undefined;
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exitInfo = null;
  child.exited = new Promise((r) => {
    child.on('exit', (code, signal) => r((child.exitInfo ??= { code, signal })));
    // A failed spawn (ENOENT: no redis-server on PATH) has no pid and may never emit 'exit'.
    child.on('error', (err) => {
      if (child.pid === undefined) r((child.exitInfo ??= { code: null, signal: null, error: err.message }));
    });
  });
  child.tail = tail;
  return child;
}

const isLocal = (host) => ['127.0.0.1', 'localhost', '::1'].includes(host);

/**
 * A reused Redis older than 7: one line saying so, else null (also when it cannot be asked: a
 * password, a TLS port, no answer within a second; the services then say what is wrong).
 */
function redisTooOld(host, port) {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    let buf = '';
    const done = (v) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1_000, () => done(null));
    sock.on('error', () => done(null));
    sock.on('connect', () => sock.write('INFO server\r\n'));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.startsWith('-')) return done(null);
      const m = /redis_version:(\d+)\.(\d+)/.exec(buf);
      if (m) done(Number(m[1]) < 7 ? `the Redis at ${host}:${port} is ${m[1]}.${m[2]}: the services need Redis 7 or later (stop it, and npm start starts its own, or point REDIS_URL at a Redis 7)` : null);
    });
  });
}

/** The executable `bin` on PATH, or null. */
function onPath(bin) {
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    const candidate = join(dir, bin);
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

/**
 * Why a server binary npm start would run cannot be used: absent from PATH (Debian's nats-server
 * and redis-server packages put them in /usr/sbin and /usr/bin; /usr/sbin is not on a normal
 * user's PATH), or, for redis-server, older than Redis 7 (the services use Redis 7 commands and
 * options). null when it can.
 */
function serverBinaryProblem(bin) {
  if (onPath(bin) === null) {
    const sbin = existsSync(join('/usr/sbin', bin)) ? ` (there is one in /usr/sbin: add it to PATH, e.g. PATH=$PATH:/usr/sbin npm start)` : ' (Debian/Ubuntu: apt-get install redis-server nats-server)';
    return `${bin} not found on PATH${sbin}`;
  }
  if (bin === 'redis-server') {
    const v = /v=(\d+)\.(\d+)/.exec(spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '');
    if (v && Number(v[1]) < 7) return `redis-server ${v[1]}.${v[2]} is too old: the services need Redis 7 or later`;
  }
  return null;
}

/**
 * Reuses the server at `addr` when it listens (once `check`, if given, found nothing wrong with it:
 * it answers why not, and that line stops the start); else starts it with `start` when local.
 */
async function ensureServer(kind, addr, url, defPort, start, check) {
  const { host, port } = addr;
  if (await tcpOpen(host, port)) {
    const wrong = check ? await check() : null;
    if (wrong) fail(wrong);
    console.log(`${kind}: reusing ${host}:${port}`);
    return;
  }
  if (!isLocal(host)) fail(`${kind} at ${redact(url)} is unreachable and not local: start it or set the URL`);
  const bin = kind === 'redis' ? 'redis-server' : 'nats-server';
  const unusable = serverBinaryProblem(bin);
  if (unusable) fail(`${kind} is not running at ${host}:${port} and npm start cannot start one: ${unusable}`, 1);
  const child = start(port);
  infra.push({ name: kind, child });
  writePids();
  try {
    // A server that exited (a bad option, a port taken meanwhile) stops the wait at once.
    await waitUntil(async () => {
      if (child.exitInfo !== null) throw new Error(`${kind} exited at start (${child.exitInfo.error ?? `code ${child.exitInfo.code}`})`);
      return tcpOpen(host, port);
    }, 15_000, kind);
  } catch (e) {
    if (e instanceof Stopping) throw e;
    fail(`${e.message}: ${child.exitInfo?.error ?? child.tail.join(' | ')}`, 1);
  }
  console.log(`${kind}: started on ${host}:${port}, pid ${child.pid} (data in .cordum/${dataDirOf(kind, port, defPort)})`);
}

/** A second stack (another port) keeps its own data. */
function dataDirOf(kind, port, defPort) {
  return port === defPort ? kind : `${kind}-${port}`;
}

/** JetStream API err_codes: JetStream off for the account a connection gets, and off altogether. */
const JS_NOT_ENABLED_FOR_ACCOUNT = 10039;
const JS_NOT_ENABLED = 10076;

/**
 * Why the NATS at `url` (reused, not started here) cannot serve the services, or null: no
 * JetStream (nobody answers $JS.API.INFO, nats.js's bare "503") or none for the account a
 * connection gets. Asked with the nats client the services use (node_modules is there: checked
 * first). A probe that cannot connect, or gets another answer, says nothing: the services, which
 * wait for NATS, report that themselves.
 */
async function natsWithoutJetStream(url, { host, port }) {
  const { connect: natsConnect } = await import('nats');
  let nc;
  try {
    nc = await natsConnect({ servers: url, name: 'npm-start-jetstream-probe', timeout: 3000, reconnect: false });
  } catch {
    return null;
  }
  const fix = process.env.NATS_URL
    ? 'restart that nats-server with -js, or point NATS_URL at one with JetStream'
    : 'restart that nats-server with -js, or stop it and npm start starts one itself';
  try {
    await nc.jetstreamManager({ timeout: 3000 });
    return null;
  } catch (e) {
    const api = e?.api_error?.err_code;
    if (api === JS_NOT_ENABLED_FOR_ACCOUNT) return `NATS at ${host}:${port} has no JetStream for this connection's account, and the services need it: enable jetstream for the account in the nats-server config`;
    if (api === JS_NOT_ENABLED || (api === undefined && e?.code === '503')) return `NATS at ${host}:${port} has no JetStream, and the services need it: ${fix}`;
    return null;
  } finally {
    await nc.close().catch(() => undefined);
  }
}

function devKey() {
  const file = join(stateDir, 'dev.env');
  if (existsSync(file)) {
    const m = /^CORDUM_API_KEY=(.+)$/m.exec(readFileSync(file, 'utf8'));
    if (m?.[1]) return m[1].trim();
  }
  const key = `dev_${randomBytes(18).toString('hex')}`;
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(file, `# written by npm start (DECISIONS D26); delete to rotate\nCORDUM_API_KEY=${key}\n`, { mode: 0o600 });
  return key;
}

async function readyz(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1500) });
    return res.status === 200;
  } catch {
    return false;
  }
}

/** The /readyz checks that fail (`redis, nats`), or why /readyz gave none. */
async function failingChecks(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1500) });
    const body = await res.json();
    const failing = Object.entries(body?.checks ?? {}).filter(([, ok]) => ok !== true).map(([name]) => name);
    return failing.length > 0 ? failing.join(', ') : `none (HTTP ${res.status})`;
  } catch (e) {
    return `/readyz did not answer (${e?.cause?.code ?? e?.name ?? e})`;
  }
}

/** A warning or error log line as `msg: error` (its `error`/`err` field, cut to 200 characters); else undefined. */
function problemOf(line) {
  let r;
  try {
    r = JSON.parse(line);
  } catch {
    return undefined; // not a JSON log line
  }
  if (r?.level !== 'warn' && r?.level !== 'error') return undefined;
  const why = r.error ?? r.err?.message ?? r.err ?? r.reason;
  const text = why === undefined ? '' : `: ${typeof why === 'string' ? why : JSON.stringify(why)}`;
  return `${r.msg}${text.length > 202 ? `${text.slice(0, 200)}…` : text}`;
}

/**
 * `.cordum/stack[-p<offset>].pids`: the launcher's pid and every process it started, rewritten at
 * each start and removed by a clean stop. A launcher killed with SIGKILL (the OOM killer, say)
 * leaves its children running, since they are in their own process groups: the next start
 * finds this file and names them instead of only saying a port is taken.
 */
let pidFile = null;
let wrotePids = false;
function writePids() {
  if (!pidFile) return;
  wrotePids = true;
  const procs = [...infra, ...children].filter((c) => c.child.pid !== undefined).map((c) => ({ name: c.name, pid: c.child.pid }));
  writeFileSync(pidFile, `${JSON.stringify({ launcher: process.pid, started_at: new Date().toISOString(), procs })}\n`);
}

/** True while `pid` is a live process of a stack (a pid reused by something else does not count). */
function stackProcAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /dist\/apps\/|redis-server|nats-server|start\.mjs/.test(cmd);
  } catch {
    return true; // no /proc here: kill -0 is all we can tell
  }
}

/** Refuses to start over a stack from an earlier run that is still running, naming its processes. */
function checkEarlierRun(rel) {
  if (!pidFile || !existsSync(pidFile)) return;
  let earlier;
  try {
    earlier = JSON.parse(readFileSync(pidFile, 'utf8'));
  } catch {
    rmSync(pidFile, { force: true });
    return;
  }
  if (earlier.launcher !== process.pid && stackProcAlive(earlier.launcher)) {
    fail(`another npm start (pid ${earlier.launcher}) runs this stack (${rel}): stop it with Ctrl-C in its terminal, or kill -INT ${earlier.launcher}`, 1);
  }
  const alive = (earlier.procs ?? []).filter((p) => stackProcAlive(p.pid));
  if (alive.length > 0) {
    fail(`a stack whose launcher was killed is still running (${rel}): stop it with kill ${alive.map((p) => p.pid).join(' ')} (${alive.map((p) => p.name).join(', ')})`, 1);
  }
  rmSync(pidFile, { force: true });
}

let stopping = null;
async function stopAll(code) {
  if (stopping) return stopping;
  stopping = (async () => {
    console.log('\nstopping: gateways, workers, schedulers, kernels, then servers started here');
    // Workers before schedulers (P209): a worker's stop finishes its jobs in flight and publishes
    // their results, which a scheduler must still be running to record; stopped the other way
    // round, a job finished during the stop stayed RUNNING until the next start.
    const order = ['api-gateway', 'mcp', 'echo-worker', 'scheduler', 'workflow-engine', 'context-engine', 'safety-kernel'];
    for (const svc of order) {
      const group = children.filter((c) => c.service === svc && c.child.exitInfo === null);
      await Promise.all(group.map((c) => stopChild(c.child)));
    }
    // anything not in the order above (a service added to services.json later)
    await Promise.all(children.map((c) => stopChild(c.child)));
    for (const s of [...infra].reverse()) await stopChild(s.child);
    // Only our own file, and only once everything in it is gone (an earlier run's stays to be named).
    if (wrotePids && [...infra, ...children].every((c) => c.child.exitInfo !== null)) rmSync(pidFile, { force: true });
    console.log('stopped');
    process.exit(code);
  })();
  return stopping;
}

async function stopChild(child) {
  if (child.exitInfo !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await child.exited;
  clearTimeout(t);
}

// A closed terminal (SIGHUP) makes writes to stdout/stderr fail: that must not end the
// script before it has stopped its children.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => void stopAll(0));
process.on('uncaughtException', (e) => {
  process.stderr.write(`npm start: ${e?.stack ?? e}\n`);
  void stopAll(1);
});
process.on('unhandledRejection', (e) => {
  process.stderr.write(`npm start: ${e?.stack ?? e}\n`);
  void stopAll(1);
});
// Last resort for an exit that skipped stopAll: no child outlives this script.
process.on('exit', () => {
  for (const c of [...children, ...infra]) {
    if (c.child.exitInfo === null && c.child.pid) {
      try {
        process.kill(c.child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
});

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // A fresh clone: without node_modules neither the build (npx nx) nor the services (their bundles
  // load nats, ioredis, ... from it) can run. One line, before anything is built or started.
  if (!existsSync(join(root, 'node_modules/.bin/nx'))) fail('dependencies are not installed; run npm install --no-audit --no-fund first');
  const addrs = readEnvAddresses(opts.portOffset);
  const { redisUrl, natsUrl, cluster } = addrs;
  // Read before anything starts: a key file that cannot be read is one line, nothing to stop.
  const keyFromFile = secretFromFile('CORDUM_API_KEY');
  const logRel = opts.portOffset > 0 ? `.cordum/logs-p${opts.portOffset}` : '.cordum/logs';
  logDir = join(root, logRel);
  const pidRel = opts.portOffset > 0 ? `.cordum/stack-p${opts.portOffset}.pids` : '.cordum/stack.pids';
  pidFile = join(root, pidRel);
  checkEarlierRun(pidRel);

  const wanted = table.services
    .map((s) => ({ ...s, count: opts.replicas[s.name] ?? 1 }))
    .filter((s) => s.count > 0)
    .filter((s) => !s.optional || existsSync(bundleOf(s.name)) || opts.replicas[s.name]);
  const missing = wanted.filter((s) => !existsSync(bundleOf(s.name)) || bundleOlderThanSources(root, s.name));
  if (opts.build || missing.length) {
    const why = (s) => (existsSync(bundleOf(s.name)) ? `${s.name} (sources changed since its build)` : s.name);
    console.log(`building ${opts.build ? 'all apps' : missing.map(why).join(', ')} ...`);
    const r = spawnSync('npx', ['nx', 'run-many', '-t', 'build', '--outputStyle=static', ...(opts.build ? [] : [`--projects=${missing.map((s) => s.name).join(',')}`])], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, NX_DAEMON: 'false' },
    });
    if (r.status !== 0) fail('build failed', 1);
  }

  // Every port the services will bind must be free: a readiness probe answered by another
  // stack on the same ports must never pass for this one.
  const portOf = (svc, envName, k) => svc.ports[envName] + opts.portOffset + 100 * (k - 1);
  const binds = wanted.flatMap((svc) => Array.from({ length: svc.count }, (_, i) => Object.keys(svc.ports).map((envName) => ({ name: `${svc.name}-${i + 1}`, envName, port: portOf(svc, envName, i + 1) }))).flat());
  const free = await Promise.all(binds.map((b) => portFree(b.port)));
  const taken = binds.find((_, i) => !free[i]);
  if (taken) {
    fail(`port ${taken.port} (${taken.name} ${taken.envName}) is already in use: another stack running? Stop it, or start this one with --port-offset`, 1);
  }
  rotateLogs();

  if (cluster.length > 0) {
    // The services use the cluster (REDIS_CLUSTER_ADDRESSES wins over REDIS_URL): check it, never start a redis-server.
    const first = addrs.clusterAddrs[0];
    if (!(await tcpOpen(first.host, first.port))) fail(`REDIS_CLUSTER_ADDRESSES: ${redact(cluster[0])} is unreachable`, 1);
    console.log(`redis: cluster at ${redact(cluster.join(','))}`);
  } else {
    await ensureServer('redis', addrs.redis, redisUrl, 6379, (port) => {
      const dir = join(stateDir, dataDirOf('redis', port, 6379));
      mkdirSync(dir, { recursive: true });
      return spawnLogged('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...table.redisArgs], process.env);
    }, () => redisTooOld(addrs.redis.host, addrs.redis.port));
  }
  await ensureServer('nats', addrs.nats, natsUrl, 4222, (port) => {
    const dir = join(stateDir, dataDirOf('nats', port, 4222));
    mkdirSync(dir, { recursive: true });
    return spawnLogged('nats', 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], process.env);
  }, () => natsWithoutJetStream(addrs.natsFirst, addrs.nats));

  const keySource = process.env.CORDUM_API_KEY ? 'from CORDUM_API_KEY in your environment' : keyFromFile ? 'from CORDUM_API_KEY_FILE' : 'also in .cordum/dev.env';
  const apiKey = process.env.CORDUM_API_KEY || keyFromFile || devKey();
  const clientEnv = {};
  for (const [envName, ref] of Object.entries(table.clientAddresses)) {
    const svc = wanted.find((s) => s.name === ref.service);
    if (!svc) continue;
    clientEnv[envName] = Array.from({ length: svc.count }, (_, i) => `127.0.0.1:${portOf(svc, ref.port, i + 1)}`).join(',');
  }

  const rows = [];
  for (const svc of wanted) {
    // The repository's config/*.yaml, not the copies a build left in dist/ (so an edit counts
    // at the next start, or SIGHUP for the kernel's policy), unless the user set the path.
    const configEnv = {};
    for (const [envName, file] of Object.entries(svc.configFiles ?? {})) {
      if (!process.env[envName]) configEnv[envName] = join(root, file);
    }
    for (let k = 1; k <= svc.count; k++) {
      const name = `${svc.name}-${k}`;
      // A second stack on the same Redis and NATS must not take the first one's identities.
      const instanceId = opts.portOffset > 0 ? `${name}-p${opts.portOffset}` : name;
      const env = {
        ...process.env,
        // A *_FILE variable the user set reaches the services as it is (they read the file).
        ...(process.env.REDIS_URL_FILE && !process.env.REDIS_URL ? {} : { REDIS_URL: redisUrl }),
        NATS_URL: natsUrl,
        ...(keyFromFile ? {} : { CORDUM_API_KEY: apiKey }),
        CORDUM_INSTANCE_ID: instanceId,
        // The heap cap of deploy/Dockerfile (docs/performance.md "Memory"), unless NODE_OPTIONS is set.
        ...(process.env.NODE_OPTIONS === undefined ? { NODE_OPTIONS: '--max-old-space-size=512' } : {}),
        ...(svc.name === 'echo-worker' ? { WORKER_ID: instanceId } : {}),
        ...clientEnv,
        ...configEnv,
        ...(svc.env ?? {}),
      };
      const ports = {};
      for (const envName of Object.keys(svc.ports)) {
        ports[envName] = portOf(svc, envName, k);
        env[envName] = `127.0.0.1:${ports[envName]}`;
      }
      const child = spawnLogged(name, process.execPath, [bundleOf(svc.name)], env);
      children.push({ name, service: svc.name, child, healthPort: ports[svc.health] });
      writePids();
      rows.push([name, `pid ${child.pid}`, Object.entries(ports).map(([e, p]) => `${e}=${p}`).join(' ')]);
    }
    // Start in dependency order: each group must be ready before the next starts.
    const group = children.filter((c) => c.service === svc.name);
    await waitUntil(async () => {
      const dead = group.find((c) => c.child.exitInfo !== null);
      if (dead) throw new Fatal(`${dead.name} exited (${JSON.stringify(dead.child.exitInfo)}): ${dead.child.tail.slice(-5).join(' | ')}\n(logs in ${logRel}/)`, 1);
      return (await Promise.all(group.map((c) => readyz(c.healthPort)))).every(Boolean);
    }, opts.readyTimeoutS * 1000, svc.name, async () => {
      const waiting = [];
      // The first warning is usually the cause (`redis refused the credentials in REDIS_URL`); the later ones its effects.
      for (const c of group) if (!(await readyz(c.healthPort))) waiting.push(`${c.name}: failing checks ${await failingChecks(c.healthPort)}; first warning: ${c.child.firstProblem ?? c.child.tail.at(-1) ?? '(no output)'}`);
      return `\n  ${waiting.join('\n  ')}\n(logs in ${logRel}/)`;
    });
  }

  // "up" only while every process started here still runs and every service is ready.
  const dead = [...infra, ...children].find((c) => c.child.exitInfo !== null);
  if (dead) fail(`${dead.name} exited (${JSON.stringify(dead.child.exitInfo)}): ${dead.child.tail.slice(-5).join(' | ')}\n(logs in ${logRel}/)`, 1);
  const notReady = (await Promise.all(children.map(async (c) => ((await readyz(c.healthPort)) ? null : c.name)))).filter(Boolean);
  if (notReady.length > 0) fail(`not ready any more: ${notReady.join(', ')} (logs in ${logRel}/)`, 1);

  const gw = children.find((c) => c.service === 'api-gateway');
  const url = gw ? `http://127.0.0.1:${gw.healthPort}` : '(no gateway)';
  const w = Math.max(...rows.map((r) => r[0].length));
  const wp = Math.max(...rows.map((r) => r[1].length));
  console.log(`\nservice replicas (logs in ${logRel}/<name>.log, the previous run's in <name>.log.1):`);
  for (const [n, pid, p] of rows) console.log(`  ${n.padEnd(w)}  ${pid.padEnd(wp)}  ${p}`);
  const configNote = wanted.flatMap((s) => Object.entries(s.configFiles ?? {}).map(([e, file]) => `${e}=${process.env[e] || file}`));
  if (configNote.length > 0) console.log(`config files: ${configNote.join(' ')}`);
  console.log(`
Cordum is up.
  gateway URL : ${url}
  API key     : ${apiKey}   (${keySource})

Try it:
  curl -s -X POST ${url}/api/v1/jobs -H "X-API-Key: ${apiKey}" -H "Content-Type: application/json" -d '{"topic":"job.echo","prompt":"hello"}'
  curl -s ${url}/api/v1/jobs/<job_id> -H "X-API-Key: ${apiKey}"

Ctrl-C stops everything.`);

  // A crashed service is reported, never silently ignored.
  for (const c of [...infra, ...children]) {
    void c.child.exited.then((info) => {
      if (!stopping) console.error(`${c.name} exited unexpectedly (${JSON.stringify(info)}); last lines:\n  ${c.child.tail.slice(-5).join('\n  ')}`);
    });
  }
}

main().catch((e) => {
  if (e instanceof Stopping) return; // a signal arrived during start: stopAll is already running
  process.stderr.write(`npm start: ${e instanceof Fatal ? e.message : (e?.stack ?? e)}\n`);
  const code = e instanceof Fatal ? e.code : 1;
  if (children.length === 0 && infra.length === 0) process.exit(code); // nothing started yet
  void stopAll(code);
});
