import { encodeWorkerSnapshot, jobKeys, parseWorkerSnapshot } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { create, HandshakeSchema, HeartbeatSchema, WORKER_DRAINING_LABEL } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { WorkerRegistry } from '../src/registry';
import { hydrate, snapshotWriter } from '../src/snapshot';
import { routeFor } from '../src/route-job';
import { EMPTY_POOLS } from '../src/routing-config';

// Warm-start hydration (BEHAVIOURS §4, D41) against a real Redis, with the
// registry's clock injected so expiry is checked without waiting.
describe('hydrate (real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  const logs: string[] = [];
  const logger = { debug: () => undefined, info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) } as unknown as Logger;

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  const entry = (id: string, lastHeartbeat: number) => ({
    worker_id: id, pool: 'default', active_jobs: 0, max_parallel_jobs: 8, capabilities: [], labels: {}, cpu_load: 0, last_heartbeat: lastHeartbeat, ready_topics: [`worker.${id}.jobs`, 'job.echo'], start_ack: true,
  });

  it('starts cold when there is no snapshot or it does not parse', async () => {
    const reg = new WorkerRegistry();
    await redis.del(jobKeys.workerSnapshot());
    expect(await hydrate({ redis, registry: reg, timeoutMs: 5000, floorMs: 20_000, logger })).toEqual({ kind: 'cold', reason: 'absent' });
    expect(logs).toContain('no snapshot found, starting cold');
    await redis.set(jobKeys.workerSnapshot(), '{"broken":');
    expect(await hydrate({ redis, registry: reg, timeoutMs: 5000, floorMs: 20_000, logger })).toEqual({ kind: 'cold', reason: 'invalid' });
    expect(reg.all()).toEqual([]);
  });

  it('bounds lastSeen to max(last_heartbeat, now − 20 s), keeps the real last_heartbeat, and lets live heartbeats win', async () => {
    let now = 1_000_000;
    const reg = new WorkerRegistry({ ttlMs: 30_000, now: () => now });
    reg.onHeartbeat(create(HeartbeatSchema, { workerId: 'live', pool: 'p-live', maxParallelJobs: 4 }));
    await redis.set(
      jobKeys.workerSnapshot(),
      encodeWorkerSnapshot({ captured_at: now - 1000, writer_id: 'w', workers: [entry('fresh', now - 2_000), entry('old', now - 120_000), entry('live', now - 5_000)] }),
    );
    const r = await hydrate({ redis, registry: reg, timeoutMs: 5000, floorMs: 20_000, logger });
    expect(r).toMatchObject({ kind: 'warm', workers: 2 });
    expect(reg.get('fresh')).toMatchObject({ lastHeartbeat: now - 2_000, lastSeen: now - 2_000, startAck: true, readyTopics: ['worker.fresh.jobs', 'job.echo'] });
    expect(reg.get('old')).toMatchObject({ lastHeartbeat: now - 120_000, lastSeen: now - 20_000 });
    expect(reg.get('live')?.pool).toBe('p-live'); // the live heartbeat overrides the snapshot
    // ...but a heartbeat carries no handshake, so routing keeps the snapshot's direct subject / start acks
    expect(reg.get('live')).toMatchObject({ readyTopics: ['worker.live.jobs', 'job.echo'], startAck: true });
    expect(reg.live().map((w) => w.workerId).sort()).toEqual(['fresh', 'live', 'old']);
    now += 10_001; // a dead worker is routable at most TTL − 20 s after hydration
    expect(reg.live().map((w) => w.workerId)).not.toContain('old');
  });

  it('keeps a worker whose last heartbeat said draining unroutable after the warm start (P189)', async () => {
    const now = 2_000_000;
    const reg = new WorkerRegistry({ ttlMs: 30_000, now: () => now });
    await redis.set(
      jobKeys.workerSnapshot(),
      encodeWorkerSnapshot({ captured_at: now - 1000, writer_id: 'w', workers: [{ ...entry('stopping', now - 1_000), labels: { [WORKER_DRAINING_LABEL]: 'true' } }, entry('serving', now - 1_000)] }),
    );
    expect(await hydrate({ redis, registry: reg, timeoutMs: 5000, floorMs: 20_000, logger })).toMatchObject({ kind: 'warm', workers: 2 });
    expect(reg.get('stopping')?.draining).toBe(true);
    expect(reg.get('serving')?.draining).toBe(false);
    const ctx = { workers: reg, pools: () => EMPTY_POOLS, config: { dispatchUntracked: false } };
    const route = routeFor(ctx, { topic: 'job.echo', labels: {}, requires: [] });
    expect(route).toMatchObject({ kind: 'worker', worker: { workerId: 'serving' } });
  });

  it('a snapshot writer cut off from NATS gives the writer lease up to one that hears heartbeats (P190)', async () => {
    const locks = createLocks(redis);
    let aConnected = true;
    const writer = (id: string, connected: () => boolean) =>
      snapshotWriter({ redis, locks, registry: new WorkerRegistry(), instanceId: id, intervalMs: 50, lockTtlMs: 2_000, logger, busConnected: connected });
    const writtenBy = async () => parseWorkerSnapshot((await redis.get(jobKeys.workerSnapshot())) ?? '')?.writer_id;
    const a = writer('sched-a', () => aConnected);
    const b = writer('sched-b', () => true);
    await redis.del(jobKeys.workerSnapshot());
    a.start();
    try {
      await waitFor(async () => (await writtenBy()) === 'sched-a', 5_000, { message: 'a writes' });
      b.start();
      aConnected = false;
      await waitFor(async () => (await writtenBy()) === 'sched-b', 5_000, { message: 'b writes, well before a 2 s lease would have expired on its own' });
      expect(a.isLeader()).toBe(false);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("a writer that started cold keeps the stored handshake of a worker it has heard only heartbeats from (P202)", async () => {
    const now = Date.now();
    await redis.set(
      jobKeys.workerSnapshot(),
      encodeWorkerSnapshot({ captured_at: now - 1000, writer_id: 'old-writer', workers: [{ ...entry('cap-once', now - 1000), ready_topics: ['worker.cap-once.jobs', 'job.cap'], start_ack: false }] }),
    );
    const cold = new WorkerRegistry();
    cold.onHeartbeat(create(HeartbeatSchema, { workerId: 'cap-once', pool: 'default', maxParallelJobs: 4 }));
    cold.onHeartbeat(create(HeartbeatSchema, { workerId: 'sdk', pool: 'default', maxParallelJobs: 4 }));
    cold.onHandshake(create(HandshakeSchema, { componentId: 'sdk', readyTopics: ['worker.sdk.jobs', 'job.sdk'], capabilities: { start_ack: true } }));
    const writer = snapshotWriter({ redis, locks: createLocks(redis), registry: cold, instanceId: 'cold-writer', intervalMs: 50, lockTtlMs: 2_000, logger, busConnected: () => true });
    writer.start();
    try {
      const stored = await waitFor(async () => {
        const snap = parseWorkerSnapshot(await redis.get(jobKeys.workerSnapshot()));
        return snap?.writer_id === 'cold-writer' ? snap : null;
      }, 5_000, { message: 'the cold writer wrote' });
      const byId = new Map(stored.workers.map((w) => [w.worker_id, w]));
      expect(byId.get('cap-once')).toMatchObject({ ready_topics: ['worker.cap-once.jobs', 'job.cap'], start_ack: false });
      expect(byId.get('sdk')).toMatchObject({ ready_topics: ['worker.sdk.jobs', 'job.sdk'], start_ack: true });
    } finally {
      await writer.stop();
    }
  });

  it('a replica started after a worker was forgotten gets its kept handshake from the snapshot: back, the worker is routable on the topics it named (P310)', async () => {
    let now = Date.now();
    const old = new WorkerRegistry({ ttlMs: 30_000, now: () => now });
    // a CAP node agent: its topics named once, in the handshake it sends at its start
    old.onHandshake(create(HandshakeSchema, { componentId: 'agent', readyTopics: ['job.agent'] }));
    old.onHeartbeat(create(HeartbeatSchema, { workerId: 'agent', pool: '', maxParallelJobs: 4 }));
    now += 10 * 30_000 + 1; // silent ten TTLs: forgotten, its handshake kept a day (P301)
    old.live();
    expect(old.get('agent')).toBeUndefined();
    const writer = snapshotWriter({ redis, locks: createLocks(redis), registry: old, instanceId: 'kept-writer', intervalMs: 50, lockTtlMs: 2_000, logger, busConnected: () => true });
    writer.start();
    try {
      await waitFor(async () => parseWorkerSnapshot(await redis.get(jobKeys.workerSnapshot()))?.writer_id === 'kept-writer', 5_000, { message: 'the writer wrote' });
    } finally {
      await writer.stop();
    }
    // a rolling restart: a new replica starts warm, then the agent heartbeats again
    const fresh = new WorkerRegistry({ ttlMs: 30_000, now: () => now });
    expect(await hydrate({ redis, registry: fresh, timeoutMs: 5000, floorMs: 20_000, logger })).toMatchObject({ kind: 'warm', workers: 0 });
    fresh.onHeartbeat(create(HeartbeatSchema, { workerId: 'agent', pool: '', maxParallelJobs: 4 }));
    expect(fresh.get('agent')?.readyTopics).toEqual(['job.agent']);
    // still kept until the day is up: the next writer carries it on, and then it is gone
    const after = new WorkerRegistry({ ttlMs: 30_000, now: () => now + 24 * 3_600_000 });
    await hydrate({ redis, registry: after, timeoutMs: 5000, floorMs: 20_000, logger });
    after.onHeartbeat(create(HeartbeatSchema, { workerId: 'agent', pool: '', maxParallelJobs: 4 }));
    expect(after.get('agent')?.readyTopics).toEqual([]);
  });

  it('falls back cold when the read does not answer within the timeout', async () => {
    const dead = createRedis({ url: 'redis://127.0.0.1:1', clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
    try {
      const r = await hydrate({ redis: dead, registry: new WorkerRegistry(), timeoutMs: 200, floorMs: 20_000, logger });
      expect(r).toEqual({ kind: 'cold', reason: 'read_failed' });
      expect(logs).toContain('warm-start read failed');
    } finally {
      await closeRedis(dead).catch(() => undefined);
    }
  });
});
