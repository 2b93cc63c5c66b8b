import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess } from './process';
import { canConnect, type TestServer } from './servers';
import type { TestCluster } from './redis-cluster';
import { waitFor } from './wait';

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
  await waitFor(async () => {
    const dead = nodes.find((n) => !n.process.running);
    if (dead) throw new Error(`nats-server on ${dead.port} exited: ${dead.process.logs()}`);
    return (await Promise.all(nodes.map((n) => canConnect(n.port)))).every(Boolean);
  }, 15_000, { message: 'nats cluster nodes listening' }).catch(async (e: unknown) => {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  });
  // JetStream meta leader election takes a moment.
  await waitFor(() => nodes.some((n) => n.process.hasLine(/JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/)), 30_000, { message: 'jetstream meta leader' });
  return {
    nodes,
    addresses: nodes.map((n) => n.url).join(','),
    stop: async () => { await Promise.all(nodes.map((n) => n.stop())); },
  };
}
