// The issue 7 fast paths: transitions that trust the caller's record instead of
// reading it back, a lock released by the committing write, the lock-free
// DISPATCHED → RUNNING, and index updates batched per event-loop turn. Each
// must leave Redis exactly as the slow path does.
import { Redis } from 'ioredis';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { callsOf, commandCalls, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { createJobStore, jobKeys, MAX_RESULT_DEPTH, type JobRecord, type JobStore } from '../src';
import { createIndexWriter } from '../src/index-writer';
import { drive, expectClaimGuard, holdLock, newJob } from './helpers';

describe('job-store fast paths (real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  let store: JobStore;
  const seen: Array<{ id: string; from: string | null; state: string }> = [];

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000, onTransition: (job, from) => seen.push({ id: job.id, from, state: job.state }) });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  const dispatch = { dispatchId: 'd-1', attempt: 1, published: false, subject: 'job.echo', workerId: 'w1' };

  /** Runs `fn` with Redis MONITOR on (a second connection, closed after): commands sent (`top`) and run inside scripts (`inner`). */
  async function monitored(fn: (top: string[][], inner: string[][]) => Promise<void>): Promise<void> {
    const base = new Redis(server.url);
    const mon = await base.monitor();
    const top: string[][] = [];
    const inner: string[][] = [];
    mon.on('monitor', (_time: string, argv: string[], source: string) => (source === 'lua' ? inner : top).push(argv));
    try {
      await fn(top, inner);
    } finally {
      mon.disconnect();
      base.disconnect();
    }
  }

  it('a transition given the current record returns exactly what a read-back returns', async () => {
    const j = newJob({ safety: { decision: 'allow', reason: 'ok', ruleId: 'r', policySnapshot: 's' } });
    const created = await store.createJob(j);
    expect(created).toEqual(await store.getJob(j.id));
    const token = await holdLock(redis, j.id);
    const s = await store.transition(j.id, 'SCHEDULED', { token, from: ['PENDING'], patch: { maxAttempts: 3, safety: { decision: 'allow', reason: 'again', ruleId: 'r2', policySnapshot: 's2' } }, current: created });
    expect(s.ok && s.job).toEqual(await store.getJob(j.id));
    const d = await store.transition(j.id, 'DISPATCHED', { token, from: ['SCHEDULED'], patch: { dispatch, attempts: 1, dispatchedAt: 1_700_000_000_000, workerId: 'w1' }, current: s.ok ? s.job : undefined });
    expect(d.ok && d.job).toEqual(await store.getJob(j.id));
    // The history got the scheduler's decision, written in the same script.
    expect((await store.listDecisions(j.id)).map((e) => [e.rule_id, e.state])).toEqual([['r', 'PENDING'], ['r2', 'SCHEDULED']]);
  });

  it('a patch clears error and resultPtr with null (P267): gone from the record read back, from the record the transition returns, and from what finish returns', async () => {
    for (const viaCurrent of [true, false]) {
      const created = await store.createJob(newJob());
      const token = await holdLock(redis, created.id);
      const d = await store.transition(created.id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, resultPtr: 'redis://res:a1', error: { code: 'flaky', message: 'm' } }, current: created });
      expect(d.ok && d.job).toMatchObject({ resultPtr: 'redis://res:a1', error: { code: 'flaky' } });
      const r = await store.transition(created.id, 'RUNNING', { token, patch: { resultPtr: null, error: null }, ...(viaCurrent && d.ok ? { current: d.job } : {}) });
      expect(r.ok).toBe(true);
      const returned = r.ok ? r.job : undefined;
      expect({ viaCurrent, returned: { resultPtr: returned?.resultPtr, error: returned?.error } }).toEqual({ viaCurrent, returned: { resultPtr: undefined, error: undefined } });
      const read = await store.getJob(created.id);
      expect(read).not.toHaveProperty('resultPtr');
      expect(read).not.toHaveProperty('error');
      expect(returned).toEqual(read);
    }
    const created = await store.createJob(newJob());
    const token = await holdLock(redis, created.id);
    await store.transition(created.id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, resultPtr: 'redis://res:a1', error: { code: 'flaky', message: 'm' } }, current: created, release: true });
    const f = await store.finish(created.id, 'SUCCEEDED', { dispatchId: dispatch.dispatchId, patch: { resultPtr: null, error: null } });
    expect(f.ok && f.job).toEqual(await store.getJob(created.id));
    expect(f.ok && f.job).not.toHaveProperty('resultPtr');
    expect(f.ok && f.job).not.toHaveProperty('error');
  });

  it('a stale current record is detected by updatedAt and the record is read back', async () => {
    // Its own clock, one ms per write: with the wall clock, creation and the first transition can
    // share a millisecond, and the PENDING-time record would then carry the current updatedAt.
    let clock = Date.now();
    const clocked = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000, now: () => clock });
    const j = newJob();
    const created = await clocked.createJob(j);
    const token = await holdLock(redis, j.id);
    clock += 1;
    const s = await clocked.transition(j.id, 'SCHEDULED', { token, current: created });
    expect(s.ok).toBe(true);
    // A caller holding the PENDING-time record (out of date) still gets the true record back.
    await redis.hset(jobKeys.meta(j.id), 'maxAttempts', '7');
    clock += 1;
    const d = await clocked.transition(j.id, 'DISPATCHED', { token, patch: { dispatch }, current: created });
    expect(d.ok && d.job).toEqual(await store.getJob(j.id));
    expect(d.ok && d.job.maxAttempts).toBe(7);
  });

  it('via: PENDING → SCHEDULED → DISPATCHED in one write, broadcast and indexed step by step, each step checked', async () => {
    const j = newJob();
    const created = await store.createJob(j);
    const token = await holdLock(redis, j.id);
    expect(await store.transition(j.id, 'DISPATCHED', { token, via: 'RUNNING', current: created })).toMatchObject({ ok: false, reason: 'illegal_transition' });
    expect(await store.transition(j.id, 'SUCCEEDED', { token, via: 'SCHEDULED', current: created })).toMatchObject({ ok: false, reason: 'illegal_transition' });
    const safety = { decision: 'allow', reason: 'checked', ruleId: 'r-s', policySnapshot: 's' };
    const d = await store.transition(j.id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { safety, maxAttempts: 3, dispatch, attempts: 1 }, current: created });
    expect(d).toMatchObject({ ok: true, from: 'PENDING' });
    expect(d.ok && d.job).toEqual(await store.getJob(j.id));
    expect(seen.filter((e) => e.id === j.id).map((e) => [e.from, e.state])).toEqual([[null, 'PENDING'], ['PENDING', 'SCHEDULED'], ['SCHEDULED', 'DISPATCHED']]);
    expect((await store.listDecisions(j.id)).pop()).toMatchObject({ rule_id: 'r-s', state: 'SCHEDULED' });
    expect(await redis.zscore(jobKeys.indexState('acme', 'PENDING'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('acme', 'SCHEDULED'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('acme', 'DISPATCHED'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.active('DISPATCHED'), j.id)).not.toBeNull();
  });

  it('release deletes the lock only when the write commits', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    // Refused (state mismatch): the caller still holds its lock.
    expect(await store.transition(j.id, 'RUNNING', { token, release: true })).toMatchObject({ ok: false, reason: 'illegal_transition' });
    expect(await redis.get(jobKeys.lock(j.id))).toBe(token);
    expect(await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch }, release: true })).toMatchObject({ ok: true });
    expect(await redis.exists(jobKeys.lock(j.id))).toBe(0);
  });

  it('markPublished with release marks, deletes the lock and returns the record without reading it', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    const d = await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch } });
    const m = await store.markPublished(j.id, 'd-1', token, { current: d.ok ? d.job : undefined, release: true });
    expect(m.ok && m.job.dispatch).toEqual({ ...dispatch, published: true });
    const stored = (await store.getJob(j.id))!;
    expect(m.ok && { ...m.job, dispatch: stored.dispatch }).toEqual(stored);
    expect(stored.dispatch).toEqual({ ...dispatch, published: true });
    expect(await redis.exists(jobKeys.lock(j.id))).toBe(0);
    // The lock is gone, so a second mark is fenced.
    expect(await store.markPublished(j.id, 'd-1', token)).toMatchObject({ ok: false, reason: 'fenced' });
  });

  it('markRunning moves DISPATCHED → RUNNING only while no lock is held and only for the current dispatch', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    await redis.del(jobKeys.lock(j.id));
    expect(await store.markRunning(j.id, '')).toEqual({ ok: false, reason: 'state_mismatch', state: 'SCHEDULED' });
    // No attempt is out: any attempt a progress names is not the job's (P127).
    expect(await store.markRunning(j.id, 'd-1')).toEqual({ ok: false, reason: 'stale_dispatch', state: 'SCHEDULED' });
    await holdLock(redis, j.id, token);
    await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch } });
    // A handler holds the lock: busy, nothing written.
    expect(await store.markRunning(j.id, 'd-1')).toEqual({ ok: false, reason: 'busy' });
    await redis.del(jobKeys.lock(j.id));
    expect(await store.markRunning(j.id, 'd-old')).toEqual({ ok: false, reason: 'stale_dispatch', state: 'DISPATCHED' });
    expect((await store.getJob(j.id))?.state).toBe('DISPATCHED');
    const r = await store.markRunning(j.id, 'd-1');
    expect(r.ok && r.job.state).toBe('RUNNING');
    expect(r.ok && r.job).toEqual(await store.getJob(j.id));
    expect(seen.filter((e) => e.id === j.id).pop()).toEqual({ id: j.id, from: 'DISPATCHED', state: 'RUNNING' });
    expect(await redis.zscore(jobKeys.indexState('acme', 'RUNNING'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.indexState('acme', 'DISPATCHED'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.active('RUNNING'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('DISPATCHED'), j.id)).toBeNull();
    // '' = the current attempt (CONTRACT §3); a RUNNING job does not move again.
    expect(await store.markRunning(j.id, '')).toEqual({ ok: false, reason: 'state_mismatch', state: 'RUNNING' });
    expect(await store.markRunning(j.id, 'd-1')).toEqual({ ok: false, reason: 'state_mismatch', state: 'RUNNING' });
    // A RUNNING job's older attempt is told apart too (P127; before, any RUNNING job was state_mismatch).
    expect(await store.markRunning(j.id, 'd-old')).toEqual({ ok: false, reason: 'stale_dispatch', state: 'RUNNING' });
    expect(await store.markRunning('missing-' + j.id, '')).toEqual({ ok: false, reason: 'not_found' });
  });

  it('finish writes a final result only while no lock is held and only for the current dispatch; from DISPATCHED it broadcasts RUNNING first', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    await redis.del(jobKeys.lock(j.id));
    const done = { dispatchId: 'd-1', patch: { resultPtr: `redis://res:${j.id}`, workerId: 'w1' } };
    expect(await store.finish(j.id, 'SUCCEEDED', done)).toEqual({ ok: false, reason: 'state_mismatch' });
    await holdLock(redis, j.id, token);
    await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch } });
    // A handler holds the lock: busy, nothing written.
    expect(await store.finish(j.id, 'SUCCEEDED', done)).toEqual({ ok: false, reason: 'busy' });
    await redis.del(jobKeys.lock(j.id));
    expect(await store.finish(j.id, 'SUCCEEDED', { ...done, dispatchId: 'd-old' })).toEqual({ ok: false, reason: 'stale_dispatch' });
    expect(await store.finish('missing-' + j.id, 'SUCCEEDED', done)).toEqual({ ok: false, reason: 'not_found' });
    expect((await store.getJob(j.id))?.state).toBe('DISPATCHED');
    await expect(store.finish(j.id, 'RETRYING', done)).rejects.toThrow(/terminal/);
    // only what the table (D12) allows from RUNNING: DENIED is a decision's, never a result's
    await expect(store.finish(j.id, 'DENIED', done)).rejects.toThrow(/cannot end a running job DENIED/);
    await expect(store.finish(j.id, 'OUTPUT_QUARANTINED', done)).rejects.toThrow(/D12/);
    await redis.set(jobKeys.res(j.id), '{}');
    const r = await store.finish(j.id, 'SUCCEEDED', { ...done, expireResult: true });
    expect(r.ok && r.from).toBe('DISPATCHED');
    expect(r.ok && r.job).toEqual(await store.getJob(j.id));
    expect(r.ok && r.job).toMatchObject({ state: 'SUCCEEDED', resultPtr: `redis://res:${j.id}`, workerId: 'w1', dispatch });
    expect(r.ok && r.job.finishedAt).toBeGreaterThan(0);
    expect(await redis.pttl(jobKeys.res(j.id))).toBeGreaterThan(0); // D45
    expect(seen.filter((e) => e.id === j.id).slice(-2)).toEqual([
      { id: j.id, from: 'DISPATCHED', state: 'RUNNING' },
      { id: j.id, from: 'RUNNING', state: 'SUCCEEDED' },
    ]);
    expect(await redis.zscore(jobKeys.indexState('acme', 'SUCCEEDED'), j.id)).not.toBeNull();
    for (const st of ['DISPATCHED', 'RUNNING'] as const) {
      expect(await redis.zscore(jobKeys.indexState('acme', st), j.id)).toBeNull();
      expect(await redis.zscore(jobKeys.active(st), j.id)).toBeNull();
    }
    // A terminal job does not move again ('' = the current attempt, CONTRACT §3).
    expect(await store.finish(j.id, 'FAILED', { dispatchId: '', patch: {} })).toEqual({ ok: false, reason: 'state_mismatch' });

    // From RUNNING: one broadcast; FAILED writes the DLQ entry (D14).
    const k = newJob();
    const t2 = await drive(store, redis, k, ['SCHEDULED']);
    await store.transition(k.id, 'DISPATCHED', { token: t2, patch: { dispatch } });
    await redis.del(jobKeys.lock(k.id));
    expect((await store.markRunning(k.id, 'd-1')).ok).toBe(true);
    const f = await store.finish(k.id, 'FAILED', { dispatchId: '', patch: { error: { code: 'boom', message: 'it broke' } } });
    expect(f.ok && f.from).toBe('RUNNING');
    expect(seen.filter((e) => e.id === k.id).pop()).toEqual({ id: k.id, from: 'RUNNING', state: 'FAILED' });
    expect(await store.getDlq(k.id)).toMatchObject({ job_id: k.id, reason_code: 'boom', last_state: 'FAILED' });
  });

  it('batched index updates of many concurrent transitions leave every index exactly right', async () => {
    const jobs: JobRecord[] = await Promise.all(Array.from({ length: 60 }, () => store.createJob(newJob({ tenant: 'batch' }))));
    const tokens = await Promise.all(jobs.map((j) => holdLock(redis, j.id)));
    const cmdsBefore = await zsetCalls();
    // All 60 transitions finish in a handful of event-loop turns: their index updates share commands.
    const moved = await Promise.all(jobs.map((j, i) => store.transition(j.id, 'SCHEDULED', { token: tokens[i]!, current: j })));
    expect(moved.every((m) => m.ok)).toBe(true);
    const cmds = (await zsetCalls()) - cmdsBefore;
    expect(cmds).toBeLessThan(60 * 4); // one ZADD + ZREM per key per turn, not 4 commands per job
    expect(await redis.zcard(jobKeys.indexState('batch', 'PENDING'))).toBe(0);
    expect(await redis.zcard(jobKeys.indexState('batch', 'SCHEDULED'))).toBe(60);
    expect(await redis.zcard(jobKeys.indexAll('batch'))).toBe(60);
    for (const j of jobs) {
      expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    }
    expect(await redis.pttl(jobKeys.indexState('batch', 'SCHEDULED'))).toBeGreaterThan(6 * 24 * 3600 * 1000);
  });

  const zsetCalls = async (): Promise<number> => callsOf(await commandCalls(redis), 'zadd', 'zrem');
  it('on standalone Redis a turn of index updates is one command sent (index-batch-n.lua), applied in full', async () => {
    // Warm the scripts first, so MONITOR shows EVALSHA only (no NOSCRIPT → EVAL fallback).
    const w = newJob({ tenant: 'mono' });
    await store.transition(w.id, 'SCHEDULED', { token: await holdLock(redis, w.id), from: ['PENDING'], current: await store.createJob(w) });
    await monitored(async (top, inner) => {
      const j = newJob({ tenant: 'mono' });
      const created = await store.createJob(j);
      const token = await holdLock(redis, j.id);
      const s = await store.transition(j.id, 'SCHEDULED', { token, from: ['PENDING'], current: created });
      expect(s.ok).toBe(true);
      // MONITOR lines arrive after the replies: wait until the second index batch has been seen.
      const batches = () => top.filter((a) => a[0]?.toLowerCase() === 'evalsha' && a.includes(jobKeys.indexState('mono', 'SCHEDULED')));
      await waitFor(() => batches().length === 1 && inner.some((a) => a[0]?.toLowerCase() === 'zrem'), 5_000, { message: 'index batch in MONITOR' });
      // Sent for the job: its ctx SET and the test's lock SET, then the create (its index entries
      // inside it; the listing keys' TTLs were pushed forward by the warm-up create less than a
      // minute ago) and the transition + its index batch as scripts; no ZADD/ZREM/PEXPIRE of their own.
      const sent = top.filter((a) => a.some((x) => x.includes(j.id))).map((a) => a[0]?.toLowerCase());
      expect(sent.filter((c) => c !== 'set').sort()).toEqual(['evalsha', 'evalsha', 'evalsha']);
      // The create's entries ran inside the create script, ahead of the record's HSET.
      const createOps = inner.filter((a) => a.includes(j.id) || a.includes(jobKeys.meta(j.id))).map((a) => `${a[0]?.toLowerCase()} ${a[1]}`);
      expect(createOps.slice(0, 5)).toEqual([
        `exists ${jobKeys.meta(j.id)}`,
        `zadd ${jobKeys.indexState('mono', 'PENDING')}`,
        `zadd ${jobKeys.indexAll('mono')}`,
        `zadd ${jobKeys.active('PENDING')}`,
        `hset ${jobKeys.meta(j.id)}`,
      ]);
      // The transition's batch: both adds before both removes, in one script.
      const ops = inner.filter((a) => ['zadd', 'zrem'].includes(a[0]?.toLowerCase() ?? '') && a.includes(j.id)).map((a) => `${a[0]?.toLowerCase()} ${a[1]}`);
      expect(ops.slice(-4)).toEqual([
        `zadd ${jobKeys.indexState('mono', 'SCHEDULED')}`,
        `zadd ${jobKeys.active('SCHEDULED')}`,
        `zrem ${jobKeys.indexState('mono', 'PENDING')}`,
        `zrem ${jobKeys.active('PENDING')}`,
      ]);
      expect(await redis.zscore(jobKeys.indexState('mono', 'SCHEDULED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.indexState('mono', 'PENDING'), j.id)).toBeNull();
      expect(await redis.zscore(jobKeys.indexAll('mono'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).not.toBeNull();
      expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    });
  });
  it('expireResult puts the result on the job TTL ahead of the terminal write: the patch pointer, else res:<id> (D45)', async () => {
    const ttl = 7 * 24 * 3600 * 1000;
    await monitored(async (top) => {
      const ids: string[] = [];
      for (const named of [true, false]) {
        const j = newJob();
        const resultPtr = named ? `redis://res:${j.id}:main` : undefined;
        ids.push(j.id);
        const key = resultPtr ? resultPtr.slice('redis://'.length) : jobKeys.res(j.id);
        await redis.set(key, '{"ok":true}');
        const token = await holdLock(redis, j.id);
        const d = await store.transition(j.id, 'DISPATCHED', { token, via: 'SCHEDULED', patch: { dispatch }, current: await store.createJob(j) });
        const r = await store.transition(j.id, 'SUCCEEDED', { token, patch: resultPtr ? { resultPtr } : {}, current: d.ok ? d.job : undefined, release: true, expireResult: true });
        expect(r).toMatchObject({ ok: true });
        const pttl = await redis.pttl(key);
        expect(pttl).toBeGreaterThan(ttl - 60_000);
        expect(pttl).toBeLessThanOrEqual(ttl);
        // Sent right ahead of the transition script, on the same connection.
        await waitFor(() => top.some((a) => a[0]?.toLowerCase() === 'evalsha' && a.includes(jobKeys.meta(j.id)) && a.includes('SUCCEEDED')), 5_000, { message: 'transition in MONITOR' });
        const mine = top.filter((a) => a.includes(key) || (a[0]?.toLowerCase() === 'evalsha' && a.includes(jobKeys.meta(j.id)) && a.includes('SUCCEEDED')));
        expect(mine.map((a) => a[0]?.toLowerCase()).filter((c) => c !== 'pttl')).toEqual(['set', 'pexpire', 'evalsha']);
      }
      // P327: a non-terminal write leaves the result's TTL alone; a terminal one sets it without
      // being asked (a RETRYING job ended FAILED by a stopped retry, a past deadline or no worker
      // kept its result with no TTL, against D45).
      const j = newJob();
      await redis.set(jobKeys.res(j.id), '{}');
      const token = await holdLock(redis, j.id);
      const d = await store.transition(j.id, 'DISPATCHED', { token, via: 'SCHEDULED', patch: { dispatch }, current: await store.createJob(j) });
      const run = await store.transition(j.id, 'RUNNING', { token, current: d.ok ? d.job : undefined });
      const retrying = await store.transition(j.id, 'RETRYING', { token, patch: { resultPtr: `redis://res:${j.id}` }, current: run.ok ? run.job : undefined });
      expect(retrying.ok).toBe(true);
      expect(await redis.pttl(jobKeys.res(j.id))).toBe(-1);
      const r = await store.transition(j.id, 'FAILED', { token, patch: { error: { code: 'policy_denied', message: 'retry denied' } }, current: retrying.ok ? retrying.job : undefined });
      expect(r.ok).toBe(true);
      const pttl = await redis.pttl(jobKeys.res(j.id));
      expect(pttl).toBeGreaterThan(ttl - 60_000);
      expect(pttl).toBeLessThanOrEqual(ttl);
    });
  });
  it('a result pointer outside the job\'s own res: keys is never read or expired: its res:<id> gets the TTL, the named key is untouched (P72)', async () => {
    const internal = `cordum:internal:${Date.now()}`;
    await redis.hset(internal, 'f', 'v');
    const j = newJob();
    await redis.set(jobKeys.res(j.id), '{"mine":true}');
    const token = await holdLock(redis, j.id);
    const d = await store.transition(j.id, 'DISPATCHED', { token, via: 'SCHEDULED', patch: { dispatch }, current: await store.createJob(j) });
    const r = await store.transition(j.id, 'SUCCEEDED', { token, patch: { resultPtr: `redis://${internal}` }, current: d.ok ? d.job : undefined, release: true, expireResult: true });
    expect(r.ok).toBe(true);
    expect(await redis.pttl(internal)).toBe(-1);
    expect(await redis.pttl(jobKeys.res(j.id))).toBeGreaterThan(0);
    const job = await store.getJob(j.id);
    if (!job) throw new Error('no record');
    await store.expireResult(job);
    expect(await redis.pttl(internal)).toBe(-1);
    expect(await store.readResult(job)).toBeNull();
    // Nor another job's result.
    await redis.set(jobKeys.res('someone-else'), '{"theirs":true}');
    expect(await store.readResult({ ...job, resultPtr: `redis://${jobKeys.res('someone-else')}` })).toBeNull();
    expect(await store.readResult({ ...job, resultPtr: `redis://${jobKeys.res(j.id)}` })).toEqual({ mine: true });
    await redis.del(jobKeys.res('someone-else'));
    // P269: a result nested past MAX_RESULT_DEPTH reads as none (JSON.stringify would throw on it);
    // one exactly that deep, and a long flat one, read as stored.
    const own = { ...job, resultPtr: `redis://${jobKeys.res(j.id)}` };
    const nest = (n: number, mid = '1'): string => `${'['.repeat(n)}${mid}${']'.repeat(n)}`;
    await redis.set(jobKeys.res(j.id), nest(MAX_RESULT_DEPTH + 1));
    expect(await store.readResult(own)).toBeNull();
    await redis.set(jobKeys.res(j.id), nest(MAX_RESULT_DEPTH));
    expect(JSON.stringify(await store.readResult(own))).toBe(nest(MAX_RESULT_DEPTH));
    await redis.set(jobKeys.res(j.id), JSON.stringify({ items: Array.from({ length: 5_000 }, (_, i) => ({ i })) }));
    expect(((await store.readResult(own)) as { items: unknown[] }).items).toHaveLength(5_000);
    // A res: key of another type reads as no result, not as an error.    await redis.del(jobKeys.res('someone-else'));
    // A res: key of another type reads as no result, not as an error.
    await redis.del(jobKeys.res(j.id));
    await redis.hset(jobKeys.res(j.id), 'f', 'v');
    expect(await store.readResult({ ...job, resultPtr: `redis://${jobKeys.res(j.id)}` })).toBeNull();
    await redis.del(internal, jobKeys.res(j.id));
  });
  it('a batch larger than the script unpack chunk (1,000) is written whole, adds before removes', async () => {
    const writer = createIndexWriter(redis);
    const n = 5_000; // 10,000 ZADD arguments: more than unpack() takes at once (Lua stack, 8,000)
    const members = Array.from({ length: n }, (_, i) => `big-${i}`);
    await Promise.all(members.map((m, i) => writer.write((ops) => ops.add('test:big:a', i, m, 60_000))));
    expect(await redis.zcard('test:big:a')).toBe(n);
    // One turn that moves every member from a to b: b gets all, a ends empty.
    await Promise.all(members.map((m, i) => writer.write((ops) => {
      ops.add('test:big:b', i, m);
      ops.rem('test:big:a', m);
    })));
    expect(await redis.zcard('test:big:b')).toBe(n);
    expect(await redis.zcard('test:big:a')).toBe(0);
    expect(await redis.pttl('test:big:b')).toBe(-1); // no TTL was asked for b
  });

  it('sideWrites: create and transition return before their index writes land; the writes are pushed for the caller to await, and the broadcast does not wait', async () => {
    const j = newJob({ tenant: 'side-ok' });
    const side: Promise<void>[] = [];
    let landed = 0;
    const created = await store.createJob(j, { sideWrites: side });
    expect(side).toHaveLength(1);
    void side[0]?.then(() => (landed += 1));
    // Resolved before the index write was even sent (the writer flushes on the next turn).
    expect(landed).toBe(0);
    await Promise.all(side);
    expect(landed).toBe(1);
    expect(await redis.zscore(jobKeys.indexAll('side-ok'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.indexState('side-ok', 'PENDING'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).not.toBeNull();

    const token = await holdLock(redis, j.id);
    const before = seen.length;
    const d = await store.transition(j.id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1 }, current: created, sideWrites: side });
    expect(d.ok).toBe(true);
    expect(side).toHaveLength(2);
    // Broadcast at once, without waiting for the index moves.
    expect(seen.slice(before).map((e) => e.state)).toEqual(['SCHEDULED', 'DISPATCHED']);
    await Promise.all(side);
    expect(await redis.zscore(jobKeys.indexState('side-ok', 'PENDING'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('side-ok', 'DISPATCHED'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('DISPATCHED'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
  });

  it('sideWrites: a failed side write (a DENIED job\'s DLQ entry) rejects the pushed promise, not the create, and is not unhandled; without them the create fails', async () => {
    await redis.set(jobKeys.dlqIndexTenant('side-bad'), 'not a zset');
    try {
      const side: Promise<void>[] = [];
      const denied = { initialState: 'DENIED' as const, safety: { decision: 'deny', reason: 'no', ruleId: 'r', policySnapshot: 's' } };
      const created = await store.createJob(newJob({ tenant: 'side-bad', ...denied }), { sideWrites: side });
      expect(created.state).toBe('DENIED');
      await expect(Promise.all(side)).rejects.toThrow(/WRONGTYPE/);
      await expect(store.createJob(newJob({ tenant: 'side-bad', ...denied }))).rejects.toThrow(/WRONGTYPE/);
    } finally {
      await redis.del(jobKeys.dlqIndexTenant('side-bad'));
    }
  });

  it('an approval (APPROVAL_REQUIRED → PENDING) files the job in job:active:PENDING before its transition runs', async () => {
    const heldJob = () => newJob({ tenant: 'approve-order', initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'r', ruleId: 'r1', policySnapshot: 's' } });
    const held = await store.createJob(heldJob());
    expect(await redis.zscore(jobKeys.active('PENDING'), held.id)).toBeNull();
    await monitored(async (top) => {
      const r = await store.transition(held.id, 'PENDING', { token: await holdLock(redis, held.id), from: ['APPROVAL_REQUIRED'] });
      expect(r.ok).toBe(true);
      await waitFor(() => top.filter((a) => a[0]?.toLowerCase() === 'evalsha' && a.includes(jobKeys.meta(held.id))).length === 1, 5_000, { message: 'transition in MONITOR' });
      const order = top.filter((a) => a.includes(held.id) || a.includes(jobKeys.meta(held.id))).map((a) => `${a[0]?.toLowerCase()} ${a[0]?.toLowerCase() === 'evalsha' ? a[3] : a[1]}`);
      expect(order.filter((c) => !c.startsWith('set ')).slice(0, 2)).toEqual([`zadd ${jobKeys.active('PENDING')}`, `evalsha ${jobKeys.meta(held.id)}`]);
      // A refused approval leaves an entry naming a job still held; the replayer's look drops it.
      const other = await store.createJob(heldJob());
      const refused = await store.transition(other.id, 'PENDING', { token: 'not-the-lock:1', from: ['APPROVAL_REQUIRED'] });
      expect(refused).toMatchObject({ ok: false, reason: 'fenced' });
      expect(await redis.zscore(jobKeys.active('PENDING'), other.id)).not.toBeNull();
      await store.reindex(other.id, 'PENDING', (await store.getJob(other.id))?.state ?? null, Date.now());
      expect(await redis.zscore(jobKeys.active('PENDING'), other.id)).toBeNull();
      expect(await redis.zscore(jobKeys.indexState('approve-order', 'APPROVAL_REQUIRED'), other.id)).not.toBeNull();
    });
  });

  it('a create with a claim writes only while the claim names the job; otherwise claim_lost and nothing written (P21)', async () => {
    await expectClaimGuard(store, redis);
  });


  it('a create whose index key is not a sorted set fails before the record exists (nothing half-written)', async () => {
    await redis.set(jobKeys.indexAll('idx-bad'), 'not a zset');
    try {
      const j = newJob({ tenant: 'idx-bad' });
      await expect(store.createJob(j)).rejects.toThrow(/WRONGTYPE/);
      expect(await redis.exists(jobKeys.meta(j.id))).toBe(0);
      expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    } finally {
      await redis.del(jobKeys.indexAll('idx-bad'));
    }
  });

});
