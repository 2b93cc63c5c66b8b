import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess } from './process';
import { testServer, waitListening, type TestServer } from './servers';
import type { TestCluster } from './redis-cluster';
import { waitFor } from './wait';

export interface NatsClusterOptions {
  /** Serve each node's monitoring endpoints (`/healthz`, `/varz`, …) on its own port. */
  monitor?: boolean;
}

export interface TestNatsCluster extends TestCluster {
  /** Each node's monitoring port, in `nodes` order (with `monitor`; empty otherwise). */
  monitorPorts: number[];
}

/** A 3-node NATS JetStream cluster on loopback. */
export async function startNatsCluster(opts: NatsClusterOptions = {}): Promise<TestNatsCluster> {
  const clientPorts = [await freePort(), await freePort(), await freePort()];
  const routePorts = [await freePort(), await freePort(), await freePort()];
  const monitorPorts = opts.monitor ? [await freePort(), await freePort(), await freePort()] : [];
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(',');
  const nodes: TestServer[] = [];
  for (let i = 0; i < 3; i++) {
    const port = clientPorts[i]!;
    const dir = mkdtempSync(join(tmpdir(), 'cordum-nc-'));
    const conf = join(dir, 'nats.conf');
    writeFileSync(conf, [
      `server_name: n${i}`,
      `listen: 127.0.0.1:${port}`,
      ...(opts.monitor ? [`http: 127.0.0.1:${monitorPorts[i]!}`] : []),
      `jetstream { store_dir: "${join(dir, 'js')}" }`,
      `cluster { name: cordum-test, listen: 127.0.0.1:${routePorts[i]}, routes: [${routes.split(',').map((r) => `"${r}"`).join(', ')}] }`,
    ].join('\n'));
    nodes.push(testServer('nats', port, dir, () => startProcess(`nats-cluster:${port}`, 'nats-server', ['-c', conf])));
  }
  await Promise.all(nodes.map((n) => waitListening(n.process, n.port, 'nats-server', 15_000))).catch(async (e: unknown) => {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  });
  // JetStream meta leader election takes a moment.
  await waitFor(() => nodes.some((n) => n.process.hasLine(/JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/)), 30_000, { message: 'jetstream meta leader' });
  return {
    nodes,
    monitorPorts,
    addresses: nodes.map((n) => n.url).join(','),
    stop: async () => { await Promise.all(nodes.map((n) => n.stop())); },
  };
}
