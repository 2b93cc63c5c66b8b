import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedisCluster, type TestCluster } from '@cordum/testing';
import { createJobStore, jobKeys, type JobStore } from '../src';
import { newJob } from './helpers';

// Every script touches one slot ({id} tag); index writes run outside Lua. A
// CROSSSLOT error anywhere here fails the test.
describe('job-store on a 6-node Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  let store: JobStore;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 1, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 60_000 });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('runs create, fenced transitions, markPublished and DLQ without CROSSSLOT', async () => {
    for (let i = 0; i < 8; i++) {
      const j = newJob({ tenant: `t${i}` });
      await store.createJob(j);
      const token = `inst:${i}`;
      await redis.set(jobKeys.lock(j.id), token, 'PX', 30_000);
      expect((await store.transition(j.id, 'SCHEDULED', { token })).ok).toBe(true);
      const d = { dispatchId: `d${i}`, attempt: 1, published: false, subject: 'job.echo' };
      expect((await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch: d, attempts: 1 } })).ok).toBe(true);
      expect((await store.markPublished(j.id, `d${i}`, token)).ok).toBe(true);
      // reattempt-3.lua reads worker-sdk's claim key: same {id} slot
      const d2 = { dispatchId: `d${i}b`, attempt: 2, published: false, subject: 'job.echo' };
      expect((await store.reattempt(j.id, `d${i}`, { token, patch: { dispatch: d2, attempts: 2 } })).ok).toBe(true);
      expect((await store.patchJob(j.id, 'DISPATCHED', { token, patch: { scheduleTries: 1 } })).ok).toBe(true);
      expect((await store.listActive('DISPATCHED', Date.now(), 100)).map((e) => e.id)).toContain(j.id);
      expect(await store.transition(j.id, 'SUCCEEDED', { token: 'stale:0' })).toMatchObject({ ok: false, reason: 'fenced' });
      expect((await store.transition(j.id, 'FAILED', { token, patch: { error: { code: 'x', message: 'y' } } })).ok).toBe(true);
      expect(await store.getDlq(j.id)).toMatchObject({ job_id: j.id, last_state: 'FAILED' });
    }
  });
});
