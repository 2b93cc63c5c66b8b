// Starts the stack for an end-to-end test as real processes from dist/apps,
// with its own redis-server and nats-server on free ports. Every process's
// output (each incarnation of a respawned one too) is appended as it arrives to
// <tmp>/logs/<name>.log; stop() removes tmp unless keep() was called (a failed
// test), a process exited without the test asking (printed with its last lines
// when it happens) or CORDUM_E2E_KEEP is set. CORDUM_E2E_LOG_LEVEL (default info) sets the
// services' log level, e.g. debug to chase a flake.
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, existsSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  freePort,
  serviceBundle,
  spawnService,
  startNats,
  startRedis,
  startNatsCluster,
  startRedisCluster,
  waitFor,
  type ManagedProcess,
  type TestCluster,
  type TestServer,
} from '@cordum/testing';

export const API_KEY = 'e2e-admin-key-0123456789';

/** A logger that drops everything, for a test's own bus client. */
export const quietLog = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

export interface Stack {
  /** The redis-server, or with `redisCluster` the cluster's first node. */
  redis: TestServer;
  /** With `redisCluster`: every node as host:port (the services' REDIS_CLUSTER_ADDRESSES); else empty. */
  redisClusterAddresses: string[];
  /** Every Redis node: the six of `redisCluster`, else the one redis-server. */
  redisNodes: TestServer[];
  /** The nats-server, or with `natsCluster` the cluster's first node. */
  nats: TestServer;
  /** Every NATS node's URL (the services' NATS_URL); one entry without `natsCluster`. */
  natsUrls: string[];
  /** Every NATS node: the three of `natsCluster` (n0, n1, n2 by server_name), else the one nats-server. */
  natsNodes: TestServer[];
  kernelAddr: string;
  /** One gRPC address per safety-kernel replica; schedulers and gateways get them all as a comma list (D23). */
  kernelAddrs: string[];
  gatewayUrl: string;
  /** One URL per gateway replica (`gatewayUrl` is the first). */
  gatewayUrls: string[];
  procs: Map<string, ManagedProcess>;
  healthPorts: Map<string, number>;
  workerIds: string[];
  execLogs: string[];
  tmp: string;
  /** `<tmp>/logs`: one `<name>.log` per process name (stdout and stderr as they arrived). */
  logDir: string;
  /** Keeps tmp (process logs, exec logs) after stop() and says where; for a failed test. */
  keep(reason: string): void;
  /** Lines containing `needle` from every process's log file (all incarnations), as `<name>: <line>`. */
  grepLogs(needle: string): string[];
  /** Executions per job id, read from the workers' own exec logs. */
  executions(): Map<string, number>;
  /** (Re)spawns scheduler-<k> with the stack's env and waits until it is ready; returns the process. */
  spawnScheduler(k: number, extraEnv?: Record<string, string>): Promise<ManagedProcess>;
  /** (Re)spawns safety-kernel-<k> on its own ports with the stack's kernel env and waits until it is ready. */
  spawnKernel(k: number, extraEnv?: Record<string, string>): Promise<ManagedProcess>;
  /**
   * Starts Redis or NATS node `i` (default 0: the one server) again on the same port and data dir
   * once the test has ended it (a SIGKILL, say): nats-server keeps its JetStream store, a
   * standalone redis-server comes back empty (it persists nothing). Logged and stopped by stop()
   * like the first; `redis`, `nats`, `redisNodes` and `natsNodes` then name the new process.
   */
  restartNode(kind: 'redis' | 'nats', i?: number): Promise<TestServer>;
  /** Spawns one more echo worker (exec log counted by executions()) and waits until it is ready. */
  spawnWorker(id: string, env?: Record<string, string>): Promise<ManagedProcess>;
  stop(): Promise<void>;
}

export async function readyz(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

async function waitReady(name: string, proc: ManagedProcess, port: number): Promise<void> {
  await waitFor(
    async () => {
      if (!proc.running) throw new Error(`${name} exited: ${proc.logs().slice(-2000)}`);
      return readyz(port);
    },
    60_000,
    { message: `${name} ready`, intervalMs: 100 },
  );
}

export interface StackOptions {
  workers?: number;
  workerEnv?: Record<string, string>;
  schedulerEnv?: Record<string, string>;
  /** Scheduler replicas (default 1). */
  schedulers?: number;
  /** Gateway replicas (default 1). */
  gateways?: number;
  /** Safety-kernel replicas (default 1). */
  kernels?: number;
  kernelEnv?: Record<string, string>;
  gatewayEnv?: Record<string, string>;
  /** Extra redis-server options (e.g. tools/stack/services.json's redisArgs). */
  redisArgs?: string[];
  /** A 6-node Redis Cluster (3 masters, 3 replicas) instead of one redis-server (`redisArgs` unused). */
  redisCluster?: boolean;
  /**
   * Redis requires this password (`requirepass`, and `masterauth` on a cluster); the services'
   * REDIS_URL and every node's `url` carry it.
   */
  redisPassword?: string;
  /** A 3-node NATS JetStream cluster instead of one nats-server (the streams get 3 replicas). */
  natsCluster?: boolean;
}

/** Appends a process's output to `<dir>/<name>.log` (a respawn appends), with spawn and exit marks. */
function teeOutput(dir: string, name: string, p: ManagedProcess): Promise<void> {
  const file: WriteStream = createWriteStream(join(dir, `${name.replace(/[^\w.-]/g, '_')}.log`), { flags: 'a' });
  file.write(`# ${new Date().toISOString()} pid ${p.pid} started\n`);
  // what arrived before we attached (servers started before the log dir existed)
  for (const line of p.output) file.write(`${line}\n`);
  const write = (buf: Buffer): void => void file.write(buf);
  p.child.stdout?.on('data', write);
  p.child.stderr?.on('data', write);
  p.child.once('close', (code: number | null, signal: string | null) => file.end(`# ${new Date().toISOString()} pid ${p.pid} exited code=${code} signal=${signal}\n`));
  return once(file, 'close').then(() => undefined);
}

/** How logs and exit reports name Redis or NATS node `i`: `redis`, `redis-2`, ... */
const nodeName = (kind: 'redis' | 'nats', i: number): string => (i === 0 ? kind : `${kind}-${i + 1}`);

/** One server as a one-node group, so the stack starts, watches and stops either shape alike. */
async function single(server: Promise<TestServer>): Promise<TestCluster> {
  const s = await server;
  const nodes = [s];
  // nodes[0] may be replaced by a restart (Stack.restartNode): stop whichever runs then.
  return { nodes, addresses: s.url, stop: async () => { await Promise.all(nodes.map((n) => n.stop())); } };
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  // A missing bundle fails here, before any server starts, not halfway with Redis and NATS left running.
  for (const service of ['safety-kernel', 'scheduler', 'api-gateway', 'echo-worker']) serviceBundle(service);
  const [redisGroup, natsGroup] = await Promise.all([
    opts.redisCluster
      ? startRedisCluster(opts.redisPassword === undefined ? {} : { password: opts.redisPassword })
      : single(startRedis({ args: opts.redisArgs ?? [], ...(opts.redisPassword === undefined ? {} : { password: opts.redisPassword }) })),
    opts.natsCluster ? startNatsCluster() : single(startNats()),
  ]);
  const [redis, nats] = [redisGroup.nodes[0], natsGroup.nodes[0]];
  if (!redis || !nats) throw new Error('startStack: a Redis or NATS group without nodes');
  const natsUrls = natsGroup.nodes.map((n) => n.url);
  const redisClusterAddresses = opts.redisCluster ? redisGroup.addresses.split(',') : [];
  const tmp = mkdtempSync(join(tmpdir(), 'cordum-e2e-'));
  const logDir = join(tmp, 'logs');
  mkdirSync(logDir);
  const logsClosed: Promise<void>[] = [teeOutput(logDir, 'redis', redis.process), teeOutput(logDir, 'nats', nats.process)];
  let kept: string[] = process.env['CORDUM_E2E_KEEP'] ? ['CORDUM_E2E_KEEP'] : [];
  // A process that ends without the test asking (a crash, an outside kill) is the likely
  // cause of whatever fails next: say so in the test output and keep the logs.
  const reportUnbiddenExit = (name: string, p: ManagedProcess): void => {
    // 'close', not 'exit': by then all of its output (a crash's stack trace) has been read.
    p.child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (p.stopRequested) return;
      kept.push(`${name} exited on its own`);
      console.error(`e2e: ${name} (pid ${p.pid}) exited without being asked (code=${code} signal=${signal}); its last lines:\n${p.output.slice(-30).join('\n')}`);
    });
  };
  for (const [kind, group] of [['redis', redisGroup], ['nats', natsGroup]] as const) {
    for (const [i, node] of group.nodes.entries()) reportUnbiddenExit(nodeName(kind, i), node.process);
  }
  const procs = new Map<string, ManagedProcess>();
  const healthPorts = new Map<string, number>();
  const track = (name: string, p: ManagedProcess): void => {
    procs.set(name, p);
    logsClosed.push(teeOutput(logDir, name, p));
    reportUnbiddenExit(name, p);
  };
  const common = {
    REDIS_URL: redis.url,
    ...(opts.redisCluster ? { REDIS_CLUSTER_ADDRESSES: redisGroup.addresses } : {}),
    NATS_URL: natsUrls.join(','),
    CORDUM_LOG_LEVEL: process.env['CORDUM_E2E_LOG_LEVEL'] ?? 'info',
  };
  const cwd = tmpdir(); // services must run from any directory (CONTRACT §1)

  const kernelPorts = new Map<number, { grpc: number; http: number }>();
  for (let k = 1; k <= (opts.kernels ?? 1); k++) kernelPorts.set(k, { grpc: await freePort(), http: await freePort() });
  const kernelAddrs = [...kernelPorts.values()].map((p) => `127.0.0.1:${p.grpc}`);
  const kernelAddr = kernelAddrs.join(',');
  const kernelProc = (k: number, extraEnv: Record<string, string> = {}): ManagedProcess => {
    const ports = kernelPorts.get(k);
    if (!ports) throw new Error(`no safety-kernel-${k} in this stack`);
    const name = `safety-kernel-${k}`;
    const p = spawnService('safety-kernel', {
      ...common,
      CORDUM_INSTANCE_ID: name,
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${ports.grpc}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${ports.http}`,
      ...(opts.kernelEnv ?? {}),
      ...extraEnv,
    }, { cwd, name });
    track(name, p);
    healthPorts.set(name, ports.http);
    return p;
  };
  for (const k of kernelPorts.keys()) kernelProc(k);

  const schedPorts = new Map<number, number>();
  const schedulerProc = async (k: number, extraEnv: Record<string, string> = {}): Promise<ManagedProcess> => {
    const port = schedPorts.get(k) ?? (await freePort());
    schedPorts.set(k, port);
    const name = `scheduler-${k}`;
    const p = spawnService('scheduler', {
      ...common,
      CORDUM_INSTANCE_ID: name,
      SCHEDULER_HTTP_ADDR: `127.0.0.1:${port}`,
      SAFETY_KERNEL_ADDR: kernelAddr,
      ...(opts.schedulerEnv ?? {}),
      ...extraEnv,
    }, { cwd, name });
    track(name, p);
    healthPorts.set(name, port);
    return p;
  };
  for (let k = 1; k <= (opts.schedulers ?? 1); k++) await schedulerProc(k);

  const gatewayUrls: string[] = [];
  for (let k = 1; k <= (opts.gateways ?? 1); k++) {
    const gwHttp = await freePort();
    const name = `api-gateway-${k}`;
    const gateway = spawnService('api-gateway', {
      ...common,
      CORDUM_INSTANCE_ID: name,
      CORDUM_API_KEY: API_KEY,
      GATEWAY_HTTP_ADDR: `127.0.0.1:${gwHttp}`,
      GATEWAY_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
      GATEWAY_METRICS_ADDR: `127.0.0.1:${await freePort()}`,
      SAFETY_KERNEL_ADDR: kernelAddr,
      ...(opts.gatewayEnv ?? {}),
    }, { cwd, name });
    track(name, gateway);
    healthPorts.set(name, gwHttp);
    gatewayUrls.push(`http://127.0.0.1:${gwHttp}`);
  }

  const workerIds: string[] = [];
  const execLogs: string[] = [];
  const workerProc = async (id: string, env: Record<string, string> = {}): Promise<ManagedProcess> => {
    const port = await freePort();
    const log = join(tmp, `${id}.exec.jsonl`);
    const w = spawnService('echo-worker', {
      ...common,
      CORDUM_INSTANCE_ID: id,
      WORKER_ID: id,
      WORKER_HTTP_ADDR: `127.0.0.1:${port}`,
      WORKER_EXEC_LOG: log,
      ...(opts.workerEnv ?? {}),
      ...env,
    }, { cwd, name: id });
    track(id, w);
    healthPorts.set(id, port);
    workerIds.push(id);
    if (!execLogs.includes(log)) execLogs.push(log);
    return w;
  };
  for (let i = 1; i <= (opts.workers ?? 1); i++) await workerProc(`echo-${i}`);

  const stack: Stack = {
    redis,
    redisClusterAddresses,
    redisNodes: redisGroup.nodes,
    nats,
    natsUrls,
    natsNodes: natsGroup.nodes,
    kernelAddr,
    kernelAddrs,
    gatewayUrl: gatewayUrls[0] ?? '',
    gatewayUrls,
    procs,
    healthPorts,
    workerIds,
    execLogs,
    tmp,
    logDir,
    keep(reason) {
      kept.push(reason);
    },
    grepLogs(needle) {
      const out: string[] = [];
      for (const f of readdirSync(logDir).sort()) {
        const name = f.replace(/\.log$/, '');
        for (const line of readFileSync(join(logDir, f), 'utf8').split('\n')) if (line.includes(needle)) out.push(`${name}: ${line}`);
      }
      return out;
    },
    executions() {
      const counts = new Map<string, number>();
      for (const rec of readExecRecords(execLogs)) counts.set(rec.job_id, (counts.get(rec.job_id) ?? 0) + 1);
      return counts;
    },
    async spawnScheduler(k, extraEnv) {
      const p = await schedulerProc(k, extraEnv);
      await waitReady(`scheduler-${k}`, p, schedPorts.get(k) ?? 0);
      return p;
    },
    async spawnKernel(k, extraEnv) {
      const p = kernelProc(k, extraEnv);
      await waitReady(`safety-kernel-${k}`, p, kernelPorts.get(k)?.http ?? 0);
      return p;
    },
    async restartNode(kind, i = 0) {
      const group = kind === 'redis' ? redisGroup : natsGroup;
      const old = group.nodes[i];
      if (!old) throw new Error(`restartNode: no ${kind} node ${i}`);
      const revived = await old.restart();
      group.nodes[i] = revived; // the group's stop() ends whichever process runs then
      if (i === 0) stack[kind] = revived;
      const name = nodeName(kind, i);
      logsClosed.push(teeOutput(logDir, name, revived.process));
      reportUnbiddenExit(name, revived.process);
      return revived;
    },
    async spawnWorker(id, env) {
      const p = await workerProc(id, env);
      await waitReady(id, p, healthPorts.get(id) ?? 0);
      return p;
    },
    async stop() {
      await Promise.all([...procs.values()].map((p) => p.stop()));
      await Promise.all([redisGroup.stop(), natsGroup.stop()]);
      await Promise.all(logsClosed);
      // Exactly-once over the stack's whole life, late redeliveries included: a job may run once
      // per attempt (a retry), never one attempt twice. Checked after every process has stopped,
      // so an execution that came after a test's own audit is counted too.
      const twice = dispatchesRunTwice(readExecRecords(execLogs));
      if (twice.length > 0) kept.push(`dispatches executed twice: ${twice.slice(0, 5).join(', ')}`);
      if (kept.length > 0) {
        console.log(`e2e: process logs and exec logs kept in ${tmp} (${kept.join('; ')})`);
        kept = [];
      } else {
        rmSync(tmp, { recursive: true, force: true });
      }
      if (twice.length > 0) throw new Error(`exactly-once broken: ${twice.length} dispatch(es) executed twice (${twice.slice(0, 5).join(', ')}); logs kept in ${tmp}`);
    },
  };
  try {
    await Promise.all([...procs.entries()].map(([name, p]) => waitReady(name, p, healthPorts.get(name)!)));
  } catch (err) {
    stack.keep(`start failed: ${String(err)}`);
    await stack.stop();
    throw err;
  }
  return stack;
}

export async function api(
  stack: Pick<Stack, 'gatewayUrl'>,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${stack.gatewayUrl}${path}`, {
    method,
    headers: {
      'X-API-Key': API_KEY,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Runs `fn` over items with at most `concurrency` in flight. */
export async function pool<T, R>(items: T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** Sum of the samples of metric `name` in Prometheus text whose labels include every pair of `labels`. */
export function sumSamples(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/**
 * `sumSamples` over the /metrics of every running process of the stack whose name starts with
 * `prefix` (`scheduler-`, `api-gateway-`, `safety-kernel-1`). A replica that does not answer
 * within 2 s (frozen, restarting) counts 0 this time.
 */
export async function stackMetric(stack: Pick<Stack, 'healthPorts' | 'procs'>, prefix: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  let total = 0;
  for (const [proc, port] of stack.healthPorts) {
    if (!proc.startsWith(prefix) || !stack.procs.get(proc)?.running) continue;
    try {
      total += sumSamples(await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text(), name, labels);
    } catch {
      // a frozen or restarting replica: counted on the next scrape
    }
  }
  return total;
}

/** Writes `policy` to `<dir>/safety.yaml` for a stack's kernels (SAFETY_POLICY_PATH); answers the path. */
export function policyFile(dir: string, policy: string): string {
  const path = join(dir, 'safety.yaml');
  writeFileSync(path, policy);
  return path;
}

/** One line of an echo worker's exec log (WORKER_EXEC_LOG): written before the job's work starts. */
export interface ExecRecord {
  job_id: string;
  dispatch_id: string;
  attempt: number;
  worker_id: string;
  ts: number;
}

/** Every exec-log line of the given files, in file order. */
export function readExecRecords(files: readonly string[]): ExecRecord[] {
  const out: ExecRecord[] = [];
  for (const f of files) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n')) if (line.trim()) out.push(JSON.parse(line) as ExecRecord);
  }
  return out;
}

/** `<job>/<dispatch>` of every attempt that was executed more than once. */
export function dispatchesRunTwice(records: readonly ExecRecord[]): string[] {
  const seen = new Map<string, number>();
  for (const r of records) seen.set(`${r.job_id}/${r.dispatch_id}`, (seen.get(`${r.job_id}/${r.dispatch_id}`) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}
