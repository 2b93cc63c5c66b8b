import { closeRedis, createRedis, KeyBuilder, type RedisClient } from '@cordum/redis';
import { createLocks, type Locks } from '../src';
import { startRedisCluster, type TestCluster } from '@cordum/testing';

describe('@cordum/locks on Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  let locks: Locks;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 2, minIdleConns: 1 });
    locks = createLocks(redis);
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('acquires, fences and releases with D4 keys (lock and fence share a hash tag) across many slots', async () => {
    const kb = new KeyBuilder();
    for (let i = 0; i < 20; i++) {
      const id = `job-${i}`;
      const key = kb.tagged('cordum:scheduler:job', id);
      const fenceKey = kb.tagged('job:fence', id);
      const target = kb.tagged('job:meta', id);
      const a = await locks.tryAcquire({ key, fenceKey, owner: 'a', ttlMs: 5000 });
      expect(a?.token).toBe('a:1');
      expect(await locks.tryAcquire({ key, fenceKey, owner: 'b', ttlMs: 5000 })).toBeNull();
      expect(await locks.fencedSet(key, target, a!.token, 'x')).toBe(1);
      expect(await a!.renew()).toBe(true);
      expect(await a!.release()).toBe(true);
      expect(await locks.fencedSet(key, target, a!.token, 'y')).toBe(-2);
      const b = await locks.tryAcquire({ key, fenceKey, owner: 'b', ttlMs: 5000 });
      expect(b?.fence).toBe(2);
      await b!.release();
    }
  });
});
