import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedisCluster, type TestCluster } from '@cordum/testing';
import { configStatus, createConfigStore, sectionHash, writeAppliedReport, type ConfigStore } from '../src';

describe('config-overlay on Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  let store: ConfigStore;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 2, minIdleConns: 1 });
    store = createConfigStore(redis);
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('CAS writes work and configStatus finds reports on every master', async () => {
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.mergePatch('system', 'default', { pools: { topics: { [`job.t${i}`]: ['p'] } } })));
    const doc = await store.get('system', 'default');
    expect(doc.revision).toBe(10);
    const pools = sectionHash(doc.data, 'pools');
    // 24 instance names hash to slots spread over all three masters
    const names = Array.from({ length: 24 }, (_, i) => `inst-${i}`);
    for (const n of names) {
      await writeAppliedReport(redis, store.keys.applied('scheduler', n), {
        service: 'scheduler', instance_id: n, revision: doc.revision, hashes: { pools }, reported_at: new Date().toISOString(), checked: true,
      }, 60_000);
    }
    const status = await configStatus(store);
    expect(status.replicas.map((r) => r.instance_id).sort()).toEqual([...names].sort());
    expect(status.replicas.every((r) => r.status === 'IN_SYNC')).toBe(true);
    expect(status.document.hashes['pools']).toBe(pools);
  });
});
