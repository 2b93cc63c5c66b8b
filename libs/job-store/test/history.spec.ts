// Additive job-store pieces used by the gateway: per-job decision history,
// per-tenant DLQ index and DLQ deletion.
import { closeRedis, createRedis, masters, type RedisClient } from '@cordum/redis';
import { REDIS_BACKENDS, callsOf, commandCalls, startRedisBackend, type RedisBackend } from '@cordum/testing';
import { createJobStore, DLQ_TTL_MS, jobKeys, type JobStore } from '../src';
import { holdLock, newJob } from './helpers';

describe.each(REDIS_BACKENDS)('decision history and tenant DLQ index (%s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  let store: JobStore;

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 60_000 });
  }, 90_000); // a 6-node cluster takes a few seconds to form
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  /** SET commands run so far on every master, those inside scripts included. */
  const setCalls = async (): Promise<number> => {
    const readings = await Promise.all(masters(redis).map(commandCalls));
    return readings.reduce((sum, calls) => sum + callsOf(calls, 'set'), 0);
  };
  const safety = (decision: string, ruleId: string) => ({ decision, reason: `because ${decision}`, ruleId, policySnapshot: 'snap-1' });

  it('records the create decision and every transition that patches safety, oldest first', async () => {
    const j = newJob({ safety: safety('unavailable', '') });
    await store.createJob(j);
    await store.createJob(j); // a retried create must not duplicate the entry
    const token = await holdLock(redis, j.id);
    expect((await store.transition(j.id, 'SCHEDULED', { token, patch: { safety: safety('allow', 'r-allow') } })).ok).toBe(true);
    expect((await store.transition(j.id, 'DISPATCHED', { token })).ok).toBe(true); // no safety patch → no entry
    const d = await store.listDecisions(j.id);
    expect(d.map((e) => [e.decision, e.state, e.rule_id])).toEqual([
      ['unavailable', 'PENDING', ''],
      ['allow', 'SCHEDULED', 'r-allow'],
    ]);
    expect(d[1]?.policy_snapshot).toBe('snap-1');
    expect(await redis.pttl(jobKeys.decisions(j.id))).toBeGreaterThan(0);
  });

  it('a job without a decision has an empty history', async () => {
    const j = newJob();
    await store.createJob(j);
    expect(await store.listDecisions(j.id)).toEqual([]);
  });

  it('writes DLQ entries into the tenant index too, and deleteDlq removes entry and both index members', async () => {
    const j = newJob({ tenant: 'initech', initialState: 'DENIED', safety: safety('deny', 'r-deny') });
    await store.createJob(j);
    expect(await redis.zscore(jobKeys.dlqIndexTenant('initech'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndexTenant('acme'), j.id)).toBeNull();
    const ttl = await redis.pttl(jobKeys.dlqIndexTenant('initech'));
    expect(ttl).toBeGreaterThan(DLQ_TTL_MS - 60_000);
    const entry = await store.getDlq(j.id);
    expect(entry?.tenant).toBe('initech');
    expect(await store.deleteDlq(entry!)).toBe(true);
    expect(await store.getDlq(j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndex(), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndexTenant('initech'), j.id)).toBeNull();
    expect(await store.deleteDlq(entry!)).toBe(false);
  });

  it('deleteDlq gives the dead job\'s record, input, history and fence back the job TTL from its end, kept DLQ_TTL only for the entry (P250)', async () => {
    const j = newJob({ tenant: 'initech', initialState: 'DENIED', safety: safety('deny', 'r-deny') });
    await store.createJob(j);
    const keys = [jobKeys.meta(j.id), jobKeys.ctx(j.id), jobKeys.decisions(j.id), jobKeys.fence(j.id)];
    await store.writeDlq((await store.getJob(j.id))!); // (re-run: the create's side write may still be on its way)
    for (const k of keys) expect({ k, kept: (await redis.pttl(k)) > DLQ_TTL_MS - 60_000 }).toEqual({ k, kept: true });
    expect(await store.deleteDlq((await store.getDlq(j.id))!)).toBe(true);
    for (const k of keys) {
      const left = await redis.pttl(k);
      expect({ k, left: left > 0 && left <= 60_000 }).toEqual({ k, left: true });
    }
    // An entry of a job that ended longer than the job TTL ago: its keys go with it.
    const old = newJob({ tenant: 'initech', initialState: 'DENIED', safety: safety('deny', 'r-deny') });
    await createJobStore(redis, { jobTtlMs: 60_000, now: () => Date.now() - 120_000 }).createJob(old);
    await store.writeDlq((await store.getJob(old.id))!);
    expect(await store.deleteDlq((await store.getDlq(old.id))!)).toBe(true);
    for (const k of [jobKeys.meta(old.id), jobKeys.ctx(old.id), jobKeys.decisions(old.id), jobKeys.fence(old.id)]) expect({ k, gone: await redis.exists(k) }).toEqual({ k, gone: 0 });
  });

  it('a DLQ entry an operator deleted is not written again by a re-run of its write (a redelivery, a late notice; P22)', async () => {
    const notified: string[] = [];
    const notifying = createJobStore(redis, { jobTtlMs: 60_000, onDlq: (job) => notified.push(job.id) });
    const j = newJob({ tenant: 'initech', initialState: 'DENIED', safety: safety('deny', 'r-deny') });
    const job = await notifying.createJob(j);
    expect(notified).toEqual([j.id]);
    expect(await notifying.deleteDlq((await notifying.getDlq(j.id))!)).toBe(true);
    // Not even for a moment: the re-run runs no SET at all (a SET then an undo left the entry
    // readable, and retryable, in between).
    const setsBefore = await setCalls();
    expect(await notifying.writeDlq(job)).toBe(false);
    expect(await setCalls()).toBe(setsBefore);
    expect(await notifying.getDlq(j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndex(), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndexTenant('initech'), j.id)).toBeNull();
    expect(notified).toEqual([j.id]);
    // Another job's entry is written as before.
    const other = await notifying.createJob(newJob({ tenant: 'initech', initialState: 'DENIED', safety: safety('deny', 'r-deny') }));
    expect(await notifying.getDlq(other.id)).not.toBeNull();
  });
});
