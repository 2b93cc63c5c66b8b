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
  try {
    for (let i = 0; i < 6; i++) nodes.push(await startClusterNode());
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  const stopNodes = async (): Promise<void> => { await Promise.all(nodes.map((n) => n.stop())); };
  try {
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
  } catch (e) {
    await stopNodes();
    throw e;
  }
  return {
    nodes,
    addresses: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    stop: stopNodes,
  };
}

/**
 * One cluster-enabled redis-server. The bus port is a second free test port given with
 * `--cluster-port` (the default, port + 10000, falls in the ephemeral range, where any outgoing
 * connection may hold it). A node that exits at start (a port taken between the probe and its
 * bind) is retried on new ports; its log is in the error when every try failed.
 */
async function startClusterNode(): Promise<TestServer> {
  let lastLogs = '';
  for (let tries = 0; tries < 5; tries++) {
    const [port, busPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'cordum-rc-'));
    const proc = startProcess(`redis-cluster:${port}`, 'redis-server', [
      '--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000',
    ]);
    const node: TestServer = { port, url: `redis://127.0.0.1:${port}`, process: proc, dir, stop: async () => { await proc.stop(5_000); rmSync(dir, { recursive: true, force: true }); } };
    const up = await waitFor(async () => (!proc.running ? 'exited' : (await canConnect(port)) ? 'up' : null), 10_000, { message: `redis cluster node on ${port}` })
      .catch(async (e: unknown) => {
        const logs = proc.logs();
        await node.stop();
        throw new Error(`${e instanceof Error ? e.message : String(e)}: ${logs}`);
      });
    if (up === 'up') return node;
    lastLogs = proc.logs();
    await node.stop();
  }
  throw new Error(`redis cluster node did not start after 5 tries: ${lastLogs}`);
}

