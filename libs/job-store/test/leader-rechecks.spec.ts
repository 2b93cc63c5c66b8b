import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { REDIS_BACKENDS, startRedisBackend, type RedisBackend } from '@cordum/testing';
import { createJobStore, jobKeys, type JobStore } from '../src';
import { uniqueId } from './helpers';

// Writes the scheduler's leaders make from what they read a moment before: each acts only on
// what is still as read (P70 idle holders) or only moves an entry later (the reconciler's scan
// order), so a job that moved on meanwhile is not undone. Standalone and cluster.
describe.each(REDIS_BACKENDS)('job-store leader writes checked against what they read (%s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  let store: JobStore;

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 3_600_000 });
  }, 90_000); // a 6-node cluster takes a few seconds to form
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('P70 dropIdleSlotHolders drops a holder only while its score is the one read: one that looked again since keeps its slot', async () => {
    const g = `${uniqueId('tenant')}/rule-1`;
    for (const id of ['stale', 'relooked', 'gone-since']) expect(await store.acquireSlot(g, id, 3)).toBe(true);
    const read = await store.slotHolders(g, 10);
    expect(read.map((h) => h.id).sort()).toEqual(['gone-since', 'relooked', 'stale']);
    await new Promise((r) => setTimeout(r, 5)); // the next look is in a later millisecond
    expect(await store.acquireSlot(g, 'relooked', 3)).toBe(true); // its score moves to this look
    await store.dropSlotMembers(g, ['gone-since'], []);
    expect(await store.dropIdleSlotHolders(g, read)).toBe(1);
    expect((await store.slotHolders(g, 10)).map((h) => h.id)).toEqual(['relooked']);
    expect(await store.dropIdleSlotHolders(g, [])).toBe(0);
    // Scores as read (WITHSCORES, then numbers) compare equal to the stored ones.
    expect(await store.dropIdleSlotHolders(g, await store.slotHolders(g, 10))).toBe(1);
    expect(await redis.zcard(jobKeys.slots(g))).toBe(0);
  });

  it('deferActive moves an in-flight entry later only: never earlier, never back into an index the job left', async () => {
    const key = jobKeys.active('DISPATCHED');
    const [early, late, left] = [uniqueId('early'), uniqueId('late'), uniqueId('left')];
    await redis.zadd(key, 1_000, early, 9_000, late);
    await store.deferActive(early, 'DISPATCHED', 5_000);
    await store.deferActive(late, 'DISPATCHED', 5_000); // a newer write re-scored it later: kept
    await store.deferActive(left, 'DISPATCHED', 5_000); // not in the index (moved on): not filed
    expect(await redis.zscore(key, early)).toBe('5000');
    expect(await redis.zscore(key, late)).toBe('9000');
    expect(await redis.zscore(key, left)).toBeNull();
    await redis.zrem(key, early, late);
  });
});
