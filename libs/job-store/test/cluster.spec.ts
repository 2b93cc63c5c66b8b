// The job store on a 6-node Redis Cluster: records and their scripts live in the
// job's slot ({id}), the indexes in other slots, so the index writer sends one
// command per key there (index-batch-n.lua is for standalone Redis only).
import { Cluster } from 'ioredis';
import { startRedisCluster, waitFor, type TestCluster } from '@cordum/testing';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createJobStore, jobKeys, type JobStore } from '../src';
import { createIndexWriter } from '../src/index-writer';
import { createJobScans } from '../src/scans';
import { expectClaimGuard, holdLock, newJob } from './helpers';

describe('job-store on a 6-node Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  let store: JobStore;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000 });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('creates, moves and finishes jobs of several tenants, with every index right across the nodes', async () => {
    const jobs = Array.from({ length: 40 }, (_, i) => newJob({ tenant: `t${i % 4}` }));
    // Concurrent, so index updates of many jobs share a turn and span every master.
    const created = await Promise.all(jobs.map((j) => store.createJob(j)));
    // A new record's entries were written ahead of it (decisions.md P20), on whichever node.
    for (const j of jobs) {
      expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBe(String(created.find((c) => c.id === j.id)?.createdAt));
      expect(await redis.zscore(jobKeys.indexState(j.tenant, 'PENDING'), j.id)).not.toBeNull();
    }
    const moved = await Promise.all(created.map(async (c) => store.transition(c.id, 'SCHEDULED', { token: await holdLock(redis, c.id), from: ['PENDING'], current: c })));
    expect(moved.every((m) => m.ok)).toBe(true);
    for (const j of jobs) {
      expect(await store.getJob(j.id)).toMatchObject({ id: j.id, state: 'SCHEDULED', tenant: j.tenant });
      expect(await redis.zscore(jobKeys.indexState(j.tenant, 'SCHEDULED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.indexState(j.tenant, 'PENDING'), j.id)).toBeNull();
      expect(await redis.zscore(jobKeys.indexAll(j.tenant), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    }
    expect(await redis.pttl(jobKeys.indexAll('t0'))).toBeGreaterThan(6 * 24 * 3600 * 1000);

    // A worker's result by the lock-free finish script, its result TTL set on another node first (D45).
    const dispatch = { dispatchId: 'd-1', attempt: 1, published: true, subject: 'job.echo' };
    const dispatched = await Promise.all(moved.map(async (m) => (m.ok ? store.transition(m.job.id, 'DISPATCHED', { token: (await redis.get(jobKeys.lock(m.job.id)))!, patch: { dispatch }, current: m.job, release: true }) : m)));
    expect(dispatched.every((d) => d.ok)).toBe(true);
    await Promise.all(jobs.map((j) => redis.set(jobKeys.res(j.id), '{}')));
    const finished = await Promise.all(jobs.map((j) => store.finish(j.id, 'SUCCEEDED', { dispatchId: 'd-1', patch: { resultPtr: `redis://res:${j.id}` }, expireResult: true })));
    expect(finished.map((f) => f.ok && f.from)).toEqual(jobs.map(() => 'DISPATCHED'));
    for (const j of jobs) {
      expect((await store.getJob(j.id))?.state).toBe('SUCCEEDED');
      expect(await redis.pttl(jobKeys.res(j.id))).toBeGreaterThan(0);
      expect(await redis.zscore(jobKeys.indexState(j.tenant, 'SUCCEEDED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('DISPATCHED'), j.id)).toBeNull();
    }
  }, 30_000);

  it('a writer held between its index adds and its removals does not take the entry a later writer added for the job (P274, P279)', async () => {
    // Writer A's ZADD replies are held back (its process stalled after the adds landed); its
    // removals go out only once they come. Meanwhile writer B moves the job back into the state A
    // is removing it from. Before P274 A's late ZREM took B's entry: a DISPATCHED job in no
    // job:active set, which no reconciler timeout and no lifetime renewal would ever find.
    let release = (): void => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const held = new Proxy(redis, {
      get(target, prop) {
        if (prop === 'zadd') return async (...args: Parameters<RedisClient['zadd']>) => { const out = await target.zadd(...args); await gate; return out; };
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const storeA = createJobStore(held, { jobTtlMs: 7 * 24 * 3600 * 1000 });
    const dispatch = { dispatchId: 'd-1', attempt: 1, published: true, subject: 'job.echo' };
    const created = await store.createJob(newJob({ tenant: 't-p274' }));
    const d1 = await store.transition(created.id, 'DISPATCHED', { token: await holdLock(redis, created.id), from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1 }, current: created, release: true });
    expect(d1.ok).toBe(true);
    // A: DISPATCHED -> RETRYING, releasing the lock with the write (the result handler's write).
    const a = storeA.transition(created.id, 'RETRYING', { token: await holdLock(redis, created.id), from: ['DISPATCHED'], release: true });
    await waitFor(async () => (await redis.zscore(jobKeys.active('RETRYING'), created.id)) !== null, 10_000, { message: "A's add landed" });
    await new Promise((r) => setTimeout(r, 5)); // B's move is a later millisecond, as a retry's backoff makes it
    // B: RETRYING -> DISPATCHED (the replayer's next attempt), its index writes done.
    const b = await store.transition(created.id, 'DISPATCHED', { token: await holdLock(redis, created.id), from: ['RETRYING'], patch: { dispatch: { ...dispatch, dispatchId: 'd-2', attempt: 2 }, attempts: 2 }, release: true });
    expect(b.ok).toBe(true);
    release();
    expect((await a).ok).toBe(true);
    expect(await store.getJob(created.id)).toMatchObject({ state: 'DISPATCHED', attempts: 2 });
    expect({
      dispatched: await redis.zscore(jobKeys.active('DISPATCHED'), created.id),
      retrying: await redis.zscore(jobKeys.active('RETRYING'), created.id),
    }).toEqual({ dispatched: String(b.ok ? b.job.updatedAt : 0), retrying: null });
    // P279: the tenant's state listings (scored by creation time, so no bound can tell the two
    // moves' entries apart) are written in one script per tenant: A's late ZREM no longer takes
    // B's entry, which left the job out of every state listing of its tenant (GET /jobs?state=).
    expect({
      dispatched: await redis.zscore(jobKeys.indexState('t-p274', 'DISPATCHED'), created.id),
      retrying: await redis.zscore(jobKeys.indexState('t-p274', 'RETRYING'), created.id),
    }).toEqual({ dispatched: String(created.createdAt), retrying: null });
  });

  it('a job leaving an in-flight state leaves no entry behind when the writer that put it there runs ahead (P292)', async () => {
    // The gateway that created the job (PENDING, scored by its clock) runs a second ahead of the
    // scheduler that moves it on: P274's bound ("only an entry older than this move") kept the
    // entry, a stale job:active:PENDING member for every job such a pair of hosts handled.
    const ahead = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000, now: () => Date.now() + 1_000 });
    const created = await ahead.createJob(newJob({ tenant: 't-p292' }));
    expect(await redis.zscore(jobKeys.active('PENDING'), created.id)).toBe(String(created.createdAt));
    const moved = await store.transition(created.id, 'SCHEDULED', { token: await holdLock(redis, created.id), from: ['PENDING'], current: created, release: true });
    expect(moved.ok).toBe(true);
    expect(await redis.zscore(jobKeys.active('PENDING'), created.id)).toBeNull();
    expect(await redis.zscore(jobKeys.active('SCHEDULED'), created.id)).not.toBeNull();
  });

  it('a create with a claim that names another job writes nothing (P21), across the nodes', async () => {
    await expectClaimGuard(store, redis);
  });


  describe('through a client that knows no owner for any slot', () => {
    // Before a CLUSTER SLOTS answer covers a slot, ioredis sends a command for it to a random
    // master, which answers MOVED; so a ZADD and a PEXPIRE of one key sent together can land on
    // different nodes and run out of order: a PEXPIRE first, on a key not yet created, is a no-op.
    // Here the slot map is emptied and kept empty except for what MOVED replies teach the client.
    let fresh: Cluster;
    beforeAll(async () => {
      const c = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1 });
      if (!(c instanceof Cluster)) throw new Error('expected a cluster client');
      fresh = c;
      await fresh.ping();
      fresh.slots = [];
      fresh.refreshSlotsCache = (callback) => callback?.();
    });
    afterAll(() => closeRedis(fresh));

    it('an index key written with its TTL keeps the TTL', async () => {
      const writer = createIndexWriter(fresh);
      const keys = Array.from({ length: 30 }, (_, i) => `test:unmapped:{k${i}}`);
      await writer.write((ops) => {
        for (const key of keys) ops.add(key, 1, 'm', 600_000);
      });
      const ttls = await Promise.all(keys.map((k) => redis.pttl(k)));
      expect(ttls.filter((t) => t <= 0)).toEqual([]);
    });

    it('park has its entry in before it lists the topic, so the leader forgetting the topic meanwhile cannot strand the job (P15)', async () => {
      const topic = `job.park-order-${process.pid}`;
      const id = `park-order-${process.pid}`;
      // The worst order a cluster allows for a park that sends its ZADD and SADD at once: the
      // SADD lands, the leader's dropParkedTopicIfEmpty runs whole (ZCARD 0, SREM, ZCARD 0), and
      // only then does the ZADD land (here it also takes a MOVED round trip). A ZADD of the parked
      // set is held until a SADD of the topic sent alongside it is in and the cleanup has run; a
      // ZADD sent once nothing else is in flight (a park that waits for it) goes straight out.
      let listing: Promise<unknown> | undefined;
      const send = (name: 'zadd' | 'sadd', args: unknown[]): Promise<unknown> => (fresh[name] as (...a: unknown[]) => Promise<unknown>).apply(fresh, args);
      const racing = new Proxy(fresh, {
        get(target, prop) {
          if (prop === 'zadd') {
            return async (...args: unknown[]) => {
              if (args[0] === jobKeys.parked(topic)) {
                await Promise.resolve(); // what park sends alongside the ZADD is sent by now
                await listing;
              }
              return send('zadd', args);
            };
          }
          if (prop === 'sadd') {
            return (...args: unknown[]) => {
              if (args[0] !== jobKeys.parkedTopics()) return send('sadd', args);
              listing = send('sadd', args).then(async (r) => {
                await store.dropParkedTopicIfEmpty(topic);
                return r;
              });
              return listing;
            };
          }
          const v: unknown = Reflect.get(target, prop, target);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
      await createJobScans(racing).park(id, topic, 'PENDING', 5_000_000_000_000);
      expect(listing).toBeDefined();
      expect({ parked: await redis.zscore(jobKeys.parked(topic), id), listed: await redis.sismember(jobKeys.parkedTopics(), topic) }).toEqual({ parked: '5000000000000', listed: 1 });
      await store.unpark(topic, [id]);
      await store.dropParkedTopicIfEmpty(topic);
      await redis.zrem(jobKeys.active('PENDING'), id);
    });

    it("a tenant's DLQ index gets its TTL with its first entry", async () => {
      const dlqStore = createJobStore(fresh, { jobTtlMs: 7 * 24 * 3600 * 1000 });
      const jobs = await Promise.all(Array.from({ length: 30 }, (_, i) => store.createJob(newJob({ tenant: `dlq-t${i}` }))));
      await Promise.all(jobs.map((j) => dlqStore.writeDlq({ ...j, state: 'FAILED' }, 'worker failed')));
      const ttls = await Promise.all(jobs.map((j) => redis.pttl(jobKeys.dlqIndexTenant(j.tenant))));
      expect(ttls.filter((t) => t <= 0)).toEqual([]);
    });
  });
});
