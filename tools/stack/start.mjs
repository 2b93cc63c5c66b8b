#!/usr/bin/env node
// `npm start`: the whole stack on one machine as local processes.
//
//   npm start                                   one replica of each service + one echo worker
//   npm start -- --replicas scheduler=2,api-gateway=2,echo-worker=3
//   npm start -- --port-offset 1000             every port + 1000, Redis and NATS included unless
//                                               REDIS_URL / NATS_URL say otherwise (a second stack)
//   npm start -- --build                        rebuild dist/ first (default: only when missing)
//
// Redis and NATS: reuses the servers reachable at REDIS_URL / NATS_URL
// (default 127.0.0.1:6379 / :4222, plus the port offset; a NATS_URL comma list
// is checked at its first entry; with REDIS_CLUSTER_ADDRESSES the cluster is
// used as it is); otherwise starts redis-server and `nats-server -js` from PATH
// with data under .cordum/ (.cordum/<kind>-<port> with a port offset). Ctrl-C stops
// everything in order: intake first (gateways), then schedulers, workers,
// kernels, and last the servers this script started.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const table = JSON.parse(readFileSync(join(root, 'tools/stack/services.json'), 'utf8'));
const stateDir = join(root, '.cordum');
const logDir = join(stateDir, 'logs');

function fail(msg) {
  process.stderr.write(`npm start: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { replicas: {}, portOffset: 0, build: false };
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
        opts.replicas[name] = count;
      }
    } else if (a === '--port-offset') {
      opts.portOffset = Number(next());
      if (!Number.isInteger(opts.portOffset) || opts.portOffset < 0 || opts.portOffset > 14000) fail('--port-offset: expected 0..14000 (the highest port, 50051 + offset + replicas, must stay below 65536)');
    } else if (a === '--build') opts.build = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 14).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else fail(`unknown argument "${a}" (try --help)`);
  }
  return opts;
}

const tcpOpen = (host, port) =>
  new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(1000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('timeout', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(false));
  });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await sleep(200);
  }
  throw new Error(`${what} not ready within ${timeoutMs / 1000} s`);
}

function hostPort(url, defPort) {
  const u = new URL(url);
  return { host: u.hostname || '127.0.0.1', port: Number(u.port || defPort) };
}

const children = []; // { name, service, child, port }
const infra = []; // servers we started

function spawnLogged(name, cmd, args, env) {
  mkdirSync(logDir, { recursive: true });
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const tail = [];
  const keep = (b) => {
    for (const l of b.toString().split('\n')) if (l) tail.push(l);
    if (tail.length > 20) tail.splice(0, tail.length - 20);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exitInfo = null;
  child.exited = new Promise((r) => child.on('exit', (code, signal) => r((child.exitInfo = { code, signal }))));
  child.tail = tail;
  return child;
}

async function ensureServer(kind, url, defPort, start) {
  const { host, port } = hostPort(url.split(',')[0].trim(), defPort);
  if (await tcpOpen(host, port)) {
    console.log(`${kind}: reusing ${host}:${port}`);
    return;
  }
  if (!['127.0.0.1', 'localhost', '::1'].includes(host)) fail(`${kind} at ${url} is unreachable and not local: start it or set the URL`);
  const child = start(port);
  infra.push({ name: kind, child });
  await waitUntil(async () => child.exitInfo === null && (await tcpOpen(host, port)), 15_000, kind).catch((e) => {
    fail(`${e.message}: ${child.tail.join(' | ')}`);
  });
  console.log(`${kind}: started on ${host}:${port} (data in .cordum/${dataDirOf(kind, port, defPort)})`);
}

/** A second stack (another port) keeps its own data. */
function dataDirOf(kind, port, defPort) {
  return port === defPort ? kind : `${kind}-${port}`;
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

let stopping = null;
async function stopAll(code) {
  if (stopping) return stopping;
  stopping = (async () => {
    console.log('\nstopping: gateways, schedulers, workers, kernels, then servers started here');
    const order = ['api-gateway', 'mcp', 'scheduler', 'workflow-engine', 'echo-worker', 'context-engine', 'safety-kernel'];
    for (const svc of order) {
      const group = children.filter((c) => c.service === svc && c.child.exitInfo === null);
      await Promise.all(group.map((c) => stopChild(c.child)));
    }
    for (const s of infra.reverse()) await stopChild(s.child);
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

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const redisUrl = process.env.REDIS_URL || `redis://127.0.0.1:${6379 + opts.portOffset}`;
  const natsUrl = process.env.NATS_URL || `nats://127.0.0.1:${4222 + opts.portOffset}`;
  const clusterAddresses = (process.env.REDIS_CLUSTER_ADDRESSES || '').split(',').map((s) => s.trim()).filter(Boolean);
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  const wanted = table.services
    .map((s) => ({ ...s, count: opts.replicas[s.name] ?? 1 }))
    .filter((s) => s.count > 0)
    .filter((s) => !s.optional || existsSync(join(root, 'dist/apps', s.name, 'main.js')) || opts.replicas[s.name]);
  const missing = wanted.filter((s) => !existsSync(join(root, 'dist/apps', s.name, 'main.js')));
  if (opts.build || missing.length) {
    console.log(`building ${opts.build ? 'all apps' : missing.map((s) => s.name).join(', ')} ...`);
    const r = spawnSync('npx', ['nx', 'run-many', '-t', 'build', '--outputStyle=static', ...(opts.build ? [] : [`--projects=${missing.map((s) => s.name).join(',')}`])], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, NX_DAEMON: 'false' },
    });
    if (r.status !== 0) fail('build failed');
  }

  if (clusterAddresses.length > 0) {
    // The services use the cluster (REDIS_CLUSTER_ADDRESSES wins over REDIS_URL): check it, never start a redis-server.
    const first = clusterAddresses[0].replace(/^rediss?:\/\//, '');
    const i = first.lastIndexOf(':');
    if (!(await tcpOpen(first.slice(0, i) || '127.0.0.1', Number(first.slice(i + 1))))) fail(`REDIS_CLUSTER_ADDRESSES: ${first} is unreachable`);
    console.log(`redis: cluster at ${clusterAddresses.join(',')}`);
  } else {
    await ensureServer('redis', redisUrl, 6379, (port) => {
      const dir = join(stateDir, dataDirOf('redis', port, 6379));
      mkdirSync(dir, { recursive: true });
      return spawnLogged('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...table.redisArgs], process.env);
    });
  }
  await ensureServer('nats', natsUrl, 4222, (port) => {
    const dir = join(stateDir, dataDirOf('nats', port, 4222));
    mkdirSync(dir, { recursive: true });
    return spawnLogged('nats', 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], process.env);
  });

  const keyFromEnv = Boolean(process.env.CORDUM_API_KEY);
  const apiKey = process.env.CORDUM_API_KEY || devKey();
  const portOf = (svc, envName, k) => svc.ports[envName] + opts.portOffset + 100 * (k - 1);
  const clientEnv = {};
  for (const [envName, ref] of Object.entries(table.clientAddresses)) {
    const svc = wanted.find((s) => s.name === ref.service);
    if (!svc) continue;
    clientEnv[envName] = Array.from({ length: svc.count }, (_, i) => `127.0.0.1:${portOf(svc, ref.port, i + 1)}`).join(',');
  }

  const rows = [];
  for (const svc of wanted) {
    for (let k = 1; k <= svc.count; k++) {
      const name = `${svc.name}-${k}`;
      // A second stack on the same Redis and NATS must not take the first one's identities.
      const instanceId = opts.portOffset > 0 ? `${name}-p${opts.portOffset}` : name;
      const env = {
        ...process.env,
        REDIS_URL: redisUrl,
        NATS_URL: natsUrl,
        CORDUM_API_KEY: apiKey,
        CORDUM_INSTANCE_ID: instanceId,
        // The heap cap of deploy/Dockerfile (docs/performance.md "Memory"), unless NODE_OPTIONS is set.
        ...(process.env.NODE_OPTIONS === undefined ? { NODE_OPTIONS: '--max-old-space-size=512' } : {}),
        ...(svc.name === 'echo-worker' ? { WORKER_ID: instanceId } : {}),
        ...clientEnv,
        ...(svc.env ?? {}),
      };
      const ports = {};
      for (const envName of Object.keys(svc.ports)) {
        ports[envName] = portOf(svc, envName, k);
        env[envName] = `127.0.0.1:${ports[envName]}`;
      }
      const child = spawnLogged(name, process.execPath, [join(root, 'dist/apps', svc.name, 'main.js')], env);
      children.push({ name, service: svc.name, child, healthPort: ports[svc.health] });
      rows.push([name, Object.entries(ports).map(([e, p]) => `${e}=${p}`).join(' ')]);
    }
    // Start in dependency order: each group must be ready before the next starts.
    const group = children.filter((c) => c.service === svc.name);
    try {
      await waitUntil(async () => {
        const dead = group.find((c) => c.child.exitInfo !== null);
        if (dead) throw new Error(`${dead.name} exited (${JSON.stringify(dead.child.exitInfo)}): ${dead.child.tail.slice(-5).join(' | ')}`);
        return (await Promise.all(group.map((c) => readyz(c.healthPort)))).every(Boolean);
      }, 60_000, svc.name);
    } catch (e) {
      process.stderr.write(`npm start: ${e.message}\n(logs in .cordum/logs/)\n`);
      await stopAll(1);
      return;
    }
  }

  const gw = children.find((c) => c.service === 'api-gateway');
  const url = gw ? `http://127.0.0.1:${gw.healthPort}` : '(no gateway)';
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log('\nservice replicas (logs in .cordum/logs/<name>.log):');
  for (const [n, p] of rows) console.log(`  ${n.padEnd(w)}  ${p}`);
  console.log(`
Cordum is up.
  gateway URL : ${url}
  API key     : ${apiKey}   (${keyFromEnv ? 'from CORDUM_API_KEY in your environment' : 'also in .cordum/dev.env'})

Try it:
  curl -s -X POST ${url}/api/v1/jobs -H "X-API-Key: ${apiKey}" -H "Content-Type: application/json" -d '{"topic":"job.echo","prompt":"hello"}'
  curl -s ${url}/api/v1/jobs/<job_id> -H "X-API-Key: ${apiKey}"

Ctrl-C stops everything.`);

  // A crashed service is reported, never silently ignored.
  for (const c of children) {
    void c.child.exited.then((info) => {
      if (!stopping) console.error(`${c.name} exited unexpectedly (${JSON.stringify(info)}); last lines:\n  ${c.child.tail.slice(-5).join('\n  ')}`);
    });
  }
}

main().catch((e) => {
  process.stderr.write(`npm start: ${e.message}\n`);
  void stopAll(1);
});
