import { REDIS_BACKENDS, waitFor } from '@cordum/testing';
import { jobKeys, type JobState } from '../src';
import { drive, holdLock, newJob, storeOnBackend } from './helpers';

// P244: a job's keys get the job TTL when it is created and no write renews them, so a job that
// ran or waited longer than JOB_TTL lost its record in flight. renewLive gives every live job
// with less than half the TTL left another TTL; ended jobs keep theirs. Standalone and cluster.
const TTL = 60_000;
const OLD = 10_000; // what is left of an "old" job's TTL in these tests

describe.each(REDIS_BACKENDS)('job-store renewLive (%s Redis)', (kind) => {
  const env = storeOnBackend(kind, TTL);

  const keysOf = (id: string): string[] => [jobKeys.meta(id), jobKeys.fence(id), jobKeys.decisions(id), jobKeys.ctx(id), jobKeys.workerClaim(id)];
  /** Makes the job look created long ago: OLD ms left on each of its keys. */
  const age = async (id: string): Promise<void> => {
    for (const k of keysOf(id)) await env.redis.pexpire(k, OLD);
  };
  const ttls = async (id: string): Promise<number[]> => Promise.all(keysOf(id).map((k) => env.redis.pttl(k)));
  /** A job driven along `path`, listed in its state's job:active index, with a worker claim and a decision. */
  const job = async (path: JobState[]): Promise<string> => {
    const j = newJob();
    await drive(env.store, env.redis, j, path);
    const state = path[path.length - 1] ?? 'PENDING';
    if (state === 'PENDING' || state === 'RUNNING' || state === 'RETRYING' || state === 'DISPATCHED' || state === 'SCHEDULED') {
      await waitFor(async () => (await env.redis.zscore(jobKeys.active(state), j.id)) !== null, 5_000, { message: `${j.id} in job:active:${state}` });
    }
    await env.redis.hset(jobKeys.workerClaim(j.id), { attempt: '1', dispatch_id: 'd-1', worker_id: 'w-1' });
    await env.redis.pexpire(jobKeys.workerClaim(j.id), TTL);
    await env.redis.rpush(jobKeys.decisions(j.id), '{}');
    await env.redis.pexpire(jobKeys.decisions(j.id), TTL);
    return j.id;
  };

  it('renews every key of an old live job (pending, running, retrying), none of a young one or of one that ended', async () => {
    const pending = await job([]);
    const running = await job(['SCHEDULED', 'DISPATCHED', 'RUNNING']);
    const retrying = await job(['SCHEDULED', 'DISPATCHED', 'RETRYING']);
    const young = await job(['SCHEDULED', 'DISPATCHED', 'RUNNING']);
    const ended = await job(['SCHEDULED', 'DISPATCHED', 'RUNNING', 'SUCCEEDED']);
    // An ended job still listed in an active index (index writes lag, D16) keeps the lifetime its end gave it.
    await env.redis.zadd(jobKeys.active('RUNNING'), Date.now(), ended);
    for (const id of [pending, running, retrying, ended]) await age(id);

    expect(await env.store.renewLive()).toBe(3);
    for (const id of [pending, running, retrying]) {
      for (const left of await ttls(id)) expect(left).toBeGreaterThan(TTL - 5_000);
    }
    for (const left of await ttls(ended)) expect(left).toBeLessThanOrEqual(OLD);
    for (const left of await ttls(young)) expect(left).toBeLessThanOrEqual(TTL);
    // Renewed ones now have more than half the TTL left: the next run renews nothing.
    expect(await env.store.renewLive()).toBe(0);
    await env.redis.zrem(jobKeys.active('RUNNING'), ended);
  });

  it('never shortens a key: a worker claim with a longer TTL keeps it, a key without a TTL stays without', async () => {
    const id = await job(['SCHEDULED', 'DISPATCHED', 'RUNNING']);
    await age(id);
    await env.redis.pexpire(jobKeys.workerClaim(id), 7 * 24 * 3_600_000); // worker-sdk's default claimTtlMs
    await env.redis.persist(jobKeys.ctx(id));
    expect(await env.store.renewLive()).toBe(1);
    expect(await env.redis.pttl(jobKeys.workerClaim(id))).toBeGreaterThan(6 * 24 * 3_600_000);
    expect(await env.redis.pttl(jobKeys.ctx(id))).toBe(-1);
    expect(await env.redis.pttl(jobKeys.meta(id))).toBeGreaterThan(TTL - 5_000);
  });

  it('pages through an index longer than one chunk', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await job([]));
    for (const id of ids) await age(id);
    expect(await env.store.renewLive({ chunk: 3 })).toBe(7);
    for (const id of ids) expect(await env.redis.pttl(jobKeys.meta(id))).toBeGreaterThan(TTL - 5_000);
  });

  it('gives the job\'s keys in other slots (input, listings, concurrency group, idempotency claim) at least its record\'s life, each run, also when the record did not need renewing', async () => {
    const group = `acme/rule-life-${process.pid}`;
    const j = newJob({ tenant: `t-life-${process.pid}`, idempotencyKey: `key-${process.pid}` });
    const claim = jobKeys.idempotency(j.tenant, `key-${process.pid}`);
    await env.redis.set(claim, j.id, 'PX', TTL);
    await env.store.createJob(j, { claim });
    const token = await holdLock(env.redis, j.id);
    for (const s of ['SCHEDULED', 'DISPATCHED', 'RUNNING'] as const) expect((await env.store.transition(j.id, s, { token })).ok).toBe(true);
    await waitFor(async () => (await env.redis.zscore(jobKeys.active('RUNNING'), j.id)) !== null, 5_000);
    await env.redis.hset(jobKeys.meta(j.id), 'concurrency', JSON.stringify({ group, limit: 1 }));
    await env.redis.zadd(jobKeys.slots(group), Date.now(), j.id);
    await env.redis.zadd(jobKeys.slotWaiters(group), Date.now(), 'someone-else');
    // P246: the submit's idempotency claim too, or a client repeating the submit after JOB_TTL starts a second run beside this one.
    const others = [jobKeys.ctx(j.id), jobKeys.indexAll(j.tenant), jobKeys.indexState(j.tenant, 'RUNNING'), jobKeys.slots(group), jobKeys.slotWaiters(group), claim];
    for (const k of [jobKeys.meta(j.id), ...others]) await env.redis.pexpire(k, OLD);
    expect(await env.store.renewLive()).toBe(1);
    for (const k of others) expect(await env.redis.pttl(k)).toBeGreaterThan(TTL - 5_000);
    // A run that renewed the record but failed before the rest (a node failing over) is made good
    // by the next one, although the record has more than half its TTL left by then.
    for (const k of others) await env.redis.pexpire(k, OLD);
    expect(await env.store.renewLive()).toBe(0);
    const recordLeft = await env.redis.pttl(jobKeys.meta(j.id));
    for (const k of others) expect(await env.redis.pttl(k)).toBeGreaterThan(recordLeft - 5_000);
  });

  it('a job that cannot be renewed keeps no other from it; the run then reports the failure', async () => {
    const broken = await job([]);
    const fine = await job([]);
    await env.redis.del(jobKeys.meta(broken));
    await env.redis.set(jobKeys.meta(broken), 'not a hash'); // HMGET fails: WRONGTYPE
    await age(fine);
    await expect(env.store.renewLive()).rejects.toThrow(/WRONGTYPE/);
    expect(await env.redis.pttl(jobKeys.meta(fine))).toBeGreaterThan(TTL - 5_000);
    expect(await env.redis.pttl(jobKeys.ctx(fine))).toBeGreaterThan(TTL - 5_000);
    await env.redis.zrem(jobKeys.active('PENDING'), broken);
    await env.redis.del(jobKeys.meta(broken));
  });
});
