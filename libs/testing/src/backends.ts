// One Redis to run a library suite against: a standalone redis-server or a
// 6-node Redis Cluster (issue 3: the job-store and lock suites pass on both).
import { startRedisCluster } from './redis-cluster';
import { startRedis } from './servers';

export type RedisBackendKind = 'standalone' | 'cluster';

/** Every suite that must hold on both deployments runs once per entry (`describe.each`). */
export const REDIS_BACKENDS: readonly RedisBackendKind[] = ['standalone', 'cluster'];

export interface RedisBackend {
  kind: RedisBackendKind;
  /** `RedisConnOptions` fields: a URL for standalone, host:port list for the cluster. */
  url: string;
  clusterAddresses: string[];
  stop(): Promise<void>;
}

export async function startRedisBackend(kind: RedisBackendKind): Promise<RedisBackend> {
  if (kind === 'cluster') {
    const c = await startRedisCluster();
    return { kind, url: '', clusterAddresses: c.addresses.split(','), stop: () => c.stop() };
  }
  const s = await startRedis();
  return { kind, url: s.url, clusterAddresses: [], stop: () => s.stop() };
}
