import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess, type ManagedProcess } from './process';
import { waitFor } from './wait';

/** Resolves true when something accepts TCP connections on host:port. */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface TestServer {
  port: number;
  url: string;
  process: ManagedProcess;
  dir: string;
  stop(): Promise<void>;
}

/** A throwaway redis-server on a free loopback port, nothing persisted. */
export async function startRedis(opts: { args?: string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-'));
  const proc = startProcess(`redis:${port}`, 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(opts.args ?? []),
  ]);
  await waitFor(async () => !proc.running ? Promise.reject(new Error(`redis-server exited: ${proc.logs()}`)) : canConnect(port), 10_000, { message: 'redis-server start' });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A throwaway nats-server with JetStream on a free loopback port. */
export async function startNats(opts: { args?: string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'cordum-nats-'));
  const proc = startProcess(`nats:${port}`, 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...(opts.args ?? [])]);
  await waitFor(async () => !proc.running ? Promise.reject(new Error(`nats-server exited: ${proc.logs()}`)) : canConnect(port), 10_000, { message: 'nats-server start' });
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestCluster {
  nodes: TestServer[];
  /** For Redis: comma list host:port; for NATS: comma list of nats:// URLs. */
  addresses: string;
  stop(): Promise<void>;
}

/** A 6-node Redis Cluster (3 masters, 3 replicas) on loopback. */
export async function startRedisCluster(): Promise<TestCluster> {
  const nodes: TestServer[] = [];
  for (let i = 0; i < 6; i++) {
    // Cluster bus port = port + 10000 must also be free; retry a few ports.
    for (let tries = 0; ; tries++) {
      const port = await freePort();
      if (port + 10000 > 65535 || !(await isFree(port + 10000))) {
        if (tries > 20) throw new Error('no free port pair for redis cluster');
        continue;
      }
      const dir = mkdtempSync(join(tmpdir(), 'cordum-rc-'));
      const proc = startProcess(`redis-cluster:${port}`, 'redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
        '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000',
      ]);
      await waitFor(() => canConnect(port), 10_000);
      nodes.push({ port, url: `redis://127.0.0.1:${port}`, process: proc, dir, stop: async () => { await proc.stop(5_000); rmSync(dir, { recursive: true, force: true }); } });
      break;
    }
  }
  const create = startProcess('redis-cli-cluster', 'redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes']);
  const res = await create.waitExit(30_000);
  if (res.code !== 0) throw new Error(`redis-cli --cluster create failed: ${create.logs()}`);
  const first = nodes[0];
  if (!first) throw new Error('no nodes');
  await waitFor(async () => {
    const info = startProcess('redis-cli-info', 'redis-cli', ['-p', String(first.port), 'cluster', 'info']);
    await info.waitExit(5_000);
    return info.hasLine('cluster_state:ok');
  }, 30_000, { message: 'redis cluster state ok' });
  return {
    nodes,
    addresses: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    stop: async () => { await Promise.all(nodes.map((n) => n.stop())); },
  };
}

async function isFree(port: number): Promise<boolean> {
  return !(await canConnect(port));
}

/** A 3-node NATS JetStream cluster on loopback. */
export async function startNatsCluster(): Promise<TestCluster> {
  const clientPorts = [await freePort(), await freePort(), await freePort()];
  const routePorts = [await freePort(), await freePort(), await freePort()];
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(',');
  const nodes: TestServer[] = [];
  for (let i = 0; i < 3; i++) {
    const port = clientPorts[i]!;
    const dir = mkdtempSync(join(tmpdir(), 'cordum-nc-'));
    const conf = join(dir, 'nats.conf');
    writeFileSync(conf, [
      `server_name: n${i}`,
      `listen: 127.0.0.1:${port}`,
      `jetstream { store_dir: "${join(dir, 'js')}" }`,
      `cluster { name: cordum-test, listen: 127.0.0.1:${routePorts[i]}, routes: [${routes.split(',').map((r) => `"${r}"`).join(', ')}] }`,
    ].join('\n'));
    const proc = startProcess(`nats-cluster:${port}`, 'nats-server', ['-c', conf]);
    nodes.push({ port, url: `nats://127.0.0.1:${port}`, process: proc, dir, stop: async () => { await proc.stop(5_000); rmSync(dir, { recursive: true, force: true }); } });
  }
  await waitFor(async () => (await Promise.all(nodes.map((n) => canConnect(n.port)))).every(Boolean), 15_000);
  // JetStream meta leader election takes a moment.
  await waitFor(() => nodes.some((n) => n.process.hasLine(/JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/)), 30_000, { message: 'jetstream meta leader' });
  return {
    nodes,
    addresses: nodes.map((n) => n.url).join(','),
    stop: async () => { await Promise.all(nodes.map((n) => n.stop())); },
  };
}
