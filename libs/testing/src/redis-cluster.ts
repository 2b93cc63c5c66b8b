import { freePort } from './ports';
import { startProcess } from './process';
import { ServerExitedError, startRedis, type RedisTlsServerOptions, type TestServer } from './servers';
import { waitFor } from './wait';

export interface TestCluster {
  nodes: TestServer[];
  /** For Redis: comma list host:port; for NATS: comma list of nats:// URLs. */
  addresses: string;
  stop(): Promise<void>;
}

/**
 * A 6-node Redis Cluster (3 masters, 3 replicas) on loopback. With `password`, every node requires
 * it and replicas send it to their masters; each node's `url` carries it (startRedis).
 */
export async function startRedisCluster(opts: { password?: string; tls?: RedisTlsServerOptions } = {}): Promise<TestCluster> {
  const nodes: TestServer[] = [];
  // redis-cli reads its password from REDISCLI_AUTH (never from its command line).
  const cliEnv = opts.password === undefined ? {} : { REDISCLI_AUTH: opts.password };
  const t = opts.tls;
  const cliTls = t === undefined ? [] : ['--tls', '--cacert', t.tls.caFile, '--cert', t.tls.clientCertFile, '--key', t.tls.clientKeyFile];
  try {
    for (let i = 0; i < 6; i++) nodes.push(await startClusterNode(opts.password, t));
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  const stopNodes = async (): Promise<void> => { await Promise.all(nodes.map((n) => n.stop())); };
  try {
    const create = startProcess('redis-cli-cluster', 'redis-cli', [...cliTls, '--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'], cliEnv);
    const res = await create.waitExit(30_000);
    if (res.code !== 0) throw new Error(`redis-cli --cluster create failed: ${create.logs()}`);
    // Every node, not just one: a client asks any seed for the slot map, and a node that has not
    // yet heard every slot's owner by gossip would hand it a partial one.
    for (const node of nodes) {
      await waitFor(async () => {
        const info = startProcess('redis-cli-info', 'redis-cli', [...cliTls, '-p', String(node.port), 'cluster', 'info'], cliEnv);
        await info.waitExit(5_000);
        return info.hasLine('cluster_state:ok') && info.hasLine('cluster_slots_assigned:16384');
      }, 30_000, { message: `redis cluster state ok on node ${node.port}` });
    }
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
async function startClusterNode(password: string | undefined, tls: RedisTlsServerOptions | undefined): Promise<TestServer> {
  let last: ServerExitedError | undefined;
  for (let tries = 0; tries < 5; tries++) {
    try {
      // nodes.conf is relative to --dir, the node's own temp dir.
      return await startRedis({ ...(password === undefined ? {} : { password }), ...(tls === undefined ? {} : { tls }), args: ['--cluster-port', String(await freePort()), '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'] });
    } catch (err) {
      if (!(err instanceof ServerExitedError)) throw err;
      last = err;
    }
  }
  throw new Error(`redis cluster node did not start after 5 tries: ${last?.message ?? ''}`);
}
