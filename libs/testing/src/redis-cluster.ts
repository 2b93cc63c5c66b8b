import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess } from './process';
import { canConnect, type TestServer } from './servers';
import { waitFor } from './wait';

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

