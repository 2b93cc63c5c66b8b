import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { REDIS_BACKENDS, startRedisBackend, waitFor, type RedisBackend } from '@cordum/testing';
import { createJobStore, DLQ_STATES, DLQ_TTL_MS, JOB_STATES, jobKeys, jobToApi, TERMINAL_STATES, TRANSITIONS, trimIndex, trimIndexes, type DlqEntry, type JobRecord, type JobState, type JobStore } from '../src';
import { INDEX_EXPIRE_EVERY_MS } from '../src/index-writer';
import { drive, holdLock, newJob } from './helpers';

// Shortest legal path from PENDING to each state (BFS over the table), so every
// allowed edge can be exercised from a real record.
function pathTo(target: JobState): JobState[] {
  const prev = new Map<JobState, JobState | null>([['PENDING', null]]);
  const queue: JobState[] = ['PENDING'];
  while (queue.length) {
    const s = queue.shift()!;
    for (const n of TRANSITIONS[s]) if (!prev.has(n)) { prev.set(n, s); queue.push(n); }
  }
  const path: JobState[] = [];
  for (let s: JobState | null | undefined = target; s && s !== 'PENDING'; s = prev.get(s)) path.unshift(s);
  return path;
}

describe.each(REDIS_BACKENDS)('job-store (%s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  let store: JobStore;
  const seen: Array<{ job: JobRecord; from: JobState | null }> = [];
  const dlqSeen: Array<{ job: JobRecord; entry: DlqEntry }> = [];

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000, onTransition: (job, from) => seen.push({ job, from }), onDlq: (job, entry) => dlqSeen.push({ job, entry }) });
  }, 90_000); // a 6-node cluster takes a few seconds to form
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  const edges: Array<[JobState, JobState]> = [];
  for (const from of JOB_STATES) for (const to of TRANSITIONS[from]) edges.push([from, to]);

  it.each(edges)('allows %s → %s', async (from, to) => {
    const j = newJob();
    const token = await drive(store, redis, j, pathTo(from));
    expect((await store.getJob(j.id))?.state).toBe(from);
    const r = await store.transition(j.id, to, { token, from: [from] });
    expect(r.ok).toBe(true);
    const after = await store.getJob(j.id);
    expect(after?.state).toBe(to);
    // indexes follow the state
    expect(await redis.zscore(jobKeys.indexState(j.tenant, to), j.id)).not.toBeNull();
    if (from !== to) expect(await redis.zscore(jobKeys.indexState(j.tenant, from), j.id)).toBeNull();
    // the sys.job.dlq hook fires for a DLQ state only
    expect(dlqSeen.filter((s) => s.job.id === j.id)).toHaveLength(DLQ_STATES.has(to) ? 1 : 0);
  });

  const forbidden: Array<[JobState, JobState]> = [
    ['PENDING', 'RUNNING'],
    ['PENDING', 'DISPATCHED'],
    ['PENDING', 'SUCCEEDED'],
    ['APPROVAL_REQUIRED', 'SCHEDULED'],
    ['SCHEDULED', 'RUNNING'],
    ['RUNNING', 'DISPATCHED'],
    ['RUNNING', 'PENDING'],
    ['RETRYING', 'SUCCEEDED'],
    ['SUCCEEDED', 'FAILED'],
    ['CANCELLED', 'PENDING'],
    ['FAILED', 'DISPATCHED'],
    ['DENIED', 'PENDING'],
  ];
  it.each(forbidden)('refuses %s → %s', async (from, to) => {
    expect(TRANSITIONS[from]).not.toContain(to);
    const j = newJob();
    const token = await drive(store, redis, j, pathTo(from));
    const r = await store.transition(j.id, to, { token });
    expect(r).toMatchObject({ ok: false, reason: 'illegal_transition' });
    expect((await store.getJob(j.id))?.state).toBe(from);
  });

  it('refuses a stale fencing token and a missing lock', async () => {
    const j = newJob();
    await store.createJob(j);
    const old = await holdLock(redis, j.id, 'sched-a:1');
    await holdLock(redis, j.id, 'sched-b:2'); // another replica took the lock over
    const r = await store.transition(j.id, 'SCHEDULED', { token: old });
    expect(r).toMatchObject({ ok: false, reason: 'fenced' });
    await redis.del(jobKeys.lock(j.id));
    expect(await store.transition(j.id, 'SCHEDULED', { token: 'sched-b:2' })).toMatchObject({ ok: false, reason: 'fenced' });
    expect((await store.getJob(j.id))?.state).toBe('PENDING');
    await holdLock(redis, j.id, 'sched-b:2');
    expect((await store.transition(j.id, 'SCHEDULED', { token: 'sched-b:2' })).ok).toBe(true);
  });

  it('reports state_mismatch when the job is not in an expected state, and not_found', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    expect(await store.transition(j.id, 'CANCELLED', { token, from: ['PENDING'] })).toMatchObject({ ok: false, reason: 'state_mismatch' });
    expect(await store.transition('nope-' + j.id, 'SCHEDULED', { token })).toMatchObject({ ok: false, reason: 'not_found' });
  });

  it('createJob is idempotent on id and writes ctx, record and indexes', async () => {
    const j = newJob();
    const first = await store.createJob(j);
    const second = await store.createJob({ ...j, prompt: 'changed', topic: 'job.other' });
    expect(second).toEqual(first);
    expect(second.topic).toBe('job.echo');
    const ctx = JSON.parse((await redis.get(jobKeys.ctx(j.id)))!) as Record<string, unknown>;
    expect(ctx).toEqual({ prompt: 'hello', context: { x: 1 }, topic: 'job.echo', tenant_id: 'acme', priority: 'interactive', created_at: expect.stringMatching(/\.\d{3}Z$/) });
    expect(await redis.pttl(jobKeys.ctx(j.id))).toBeGreaterThan(6 * 24 * 3600 * 1000);
    expect(await redis.pttl(jobKeys.meta(j.id))).toBeGreaterThan(6 * 24 * 3600 * 1000);
    // the fence counter is seeded with the job TTL; the lock's INCR keeps it
    expect(await redis.pttl(jobKeys.fence(j.id))).toBeGreaterThan(6 * 24 * 3600 * 1000);
    expect(await redis.zscore(jobKeys.indexAll('acme'), j.id)).toBe(String(first.createdAt));
    expect(await redis.zscore(jobKeys.indexState('acme', 'PENDING'), j.id)).toBe(String(first.createdAt));
    expect(seen.filter((s) => s.job.id === j.id)).toHaveLength(1);
    expect(first.contextPtr).toBe(`redis://ctx:${j.id}`);
  });

  it('writes DISPATCHED with published=false, then markPublished is fenced and dispatch-bound', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    const dispatch = { dispatchId: 'd-1', attempt: 1, published: false, subject: 'job.echo', workerId: 'w1' };
    const r = await store.transition(j.id, 'DISPATCHED', { token, from: ['SCHEDULED'], patch: { dispatch, attempts: 1, dispatchedAt: Date.now() } });
    expect(r.ok && r.job.dispatch).toEqual(dispatch);
    expect(await store.markPublished(j.id, 'd-other', token)).toMatchObject({ ok: false, reason: 'state_mismatch' });
    expect(await store.markPublished(j.id, 'd-1', 'stale:0')).toMatchObject({ ok: false, reason: 'fenced' });
    const m = await store.markPublished(j.id, 'd-1', token);
    expect(m.ok && m.job.dispatch).toEqual({ ...dispatch, published: true });
  });

  it.each<JobState>(['DENIED', 'FAILED', 'TIMEOUT'])('writes the DLQ entry once for %s', async (to) => {
    const j = newJob();
    const path = to === 'DENIED' ? [] : to === 'FAILED' ? ['SCHEDULED'] : ['SCHEDULED', 'DISPATCHED'];
    const token = await drive(store, redis, j, path);
    const r = await store.transition(j.id, to, { token, patch: { error: { code: `${to.toLowerCase()}_code`, message: 'why' } } });
    expect(r.ok).toBe(true);
    const entry = await store.getDlq(j.id);
    expect(entry).toMatchObject({ job_id: j.id, topic: 'job.echo', reason_code: `${to.toLowerCase()}_code`, reason: 'why', last_state: to });
    expect(await redis.zscore(jobKeys.dlqIndex(), j.id)).not.toBeNull();
    // a redelivered packet re-runs the side effect: still one entry, unchanged
    const job = (await store.getJob(j.id))!;
    expect(await store.writeDlq({ ...job, error: { code: 'other', message: 'other' } })).toBe(false);
    expect(await store.getDlq(j.id)).toEqual(entry);
    // onDlq after the first write and after the re-run (the notice goes out again), not when told not to
    const notices = () => dlqSeen.filter((s) => s.job.id === j.id);
    expect(notices()).toHaveLength(2);
    expect(notices()[0]!.entry).toEqual(entry);
    expect(notices()[0]!.job.state).toBe(to);
    expect(await store.writeDlq(job, undefined, { notify: false })).toBe(false);
    expect(notices()).toHaveLength(2);
    expect(await redis.pttl(jobKeys.dlqEntry(j.id))).toBeGreaterThan(29 * 24 * 3600 * 1000);
  });

  it('keeps a dead job\'s record, input and history as long as its DLQ entry, past the job TTL, so it stays retryable (P74)', async () => {
    const short = createJobStore(redis, { jobTtlMs: 500 });
    const safety = { decision: 'allow' as const, reason: 'ok', ruleId: 'r1', policySnapshot: 's1' };
    const dead = newJob({ safety });
    const done = newJob({ safety });
    const t1 = await drive(short, redis, dead, ['SCHEDULED']);
    expect((await short.transition(dead.id, 'FAILED', { token: t1, patch: { error: { code: 'worker_error', message: 'boom' } } })).ok).toBe(true);
    const t2 = await drive(short, redis, done, pathTo('SUCCEEDED').slice(0, -1));
    expect((await short.transition(done.id, 'SUCCEEDED', { token: t2 })).ok).toBe(true);
    // the job TTL runs out: the finished job is gone, the dead one is whole
    await waitFor(async () => (await redis.exists(jobKeys.meta(done.id))) + (await redis.exists(jobKeys.ctx(done.id))) === 0, 10_000, { message: 'the SUCCEEDED job expires' });
    expect(await short.getJob(dead.id)).toMatchObject({ state: 'FAILED', error: { code: 'worker_error' } });
    expect(await short.readContext(dead.id)).toMatchObject({ prompt: 'hello', context: { x: 1 } });
    expect((await short.listDecisions(dead.id)).length).toBeGreaterThan(0);
    const finished = (await short.getJob(dead.id))!.finishedAt!;
    // the fence lives as long (P177): expired at the job TTL, a later lock's INCR made one that never expired
    const keys = [jobKeys.meta(dead.id), jobKeys.ctx(dead.id), jobKeys.decisions(dead.id), jobKeys.fence(dead.id)];
    const until = async (key: string): Promise<number> => Number(await redis.call('PEXPIRETIME', key));
    for (const key of keys) expect({ key, until: await until(key) }).toEqual({ key, until: finished + DLQ_TTL_MS });
    // a re-run of the DLQ write (a redelivered result, a late notice) does not move it
    expect(await short.writeDlq((await short.getJob(dead.id))!)).toBe(false);
    for (const key of keys) expect({ key, until: await until(key) }).toEqual({ key, until: finished + DLQ_TTL_MS });
  });

  it('keeps a tenant listing alive past every record added to it between two TTL refreshes (P303)', async () => {
    // One refresh per key per minute: a job added later in that minute gets none of its own, so the
    // key must have been given the window on top of the job TTL, or it (and with it every member)
    // expires up to a minute before the newest record (a held job then left GET /approvals and
    // the hold-expiry pass, and expired unanswered, at a short JOB_TTL).
    const jobTtlMs = 3_600_000;
    let clock = Date.now();
    const s = createJobStore(redis, { jobTtlMs, now: () => clock });
    const tenant = `ttl-${Date.now()}`;
    await s.createJob(newJob({ tenant }));
    const keys = [jobKeys.indexAll(tenant), jobKeys.indexState(tenant, 'PENDING')];
    for (const key of keys) expect({ key, longerThanJobTtl: (await redis.pttl(key)) > jobTtlMs }).toEqual({ key, longerThanJobTtl: true });
    clock += INDEX_EXPIRE_EVERY_MS - 1_000; // inside the window: no refresh for the next job
    const later = newJob({ tenant });
    await s.createJob(later);
    const until = async (key: string): Promise<number> => Number(await redis.call('PEXPIRETIME', key));
    const recordUntil = await until(jobKeys.meta(later.id));
    for (const key of keys) expect({ key, outlivesRecord: (await until(key)) >= recordUntil }).toEqual({ key, outlivesRecord: true });
  });

  it('gives the entry, its tenant index, the dead job\'s record and history, and a deleted entry\'s tombstone the configured DLQ_TTL (P238)', async () => {
    const dlqTtlMs = 2 * 3600 * 1000;
    const s = createJobStore(redis, { jobTtlMs: 3600 * 1000, dlqTtlMs });
    const dead = newJob({ safety: { decision: 'allow' as const, reason: 'ok', ruleId: 'r1', policySnapshot: 's1' } });
    const t = await drive(s, redis, dead, ['SCHEDULED']);
    expect((await s.transition(dead.id, 'FAILED', { token: t, patch: { error: { code: 'worker_error', message: 'boom' } } })).ok).toBe(true);
    const finished = (await s.getJob(dead.id))!.finishedAt!;
    const until = async (key: string): Promise<number> => Number(await redis.call('PEXPIRETIME', key));
    for (const key of [jobKeys.meta(dead.id), jobKeys.ctx(dead.id), jobKeys.decisions(dead.id), jobKeys.fence(dead.id)]) {
      expect({ key, until: await until(key) }).toEqual({ key, until: finished + dlqTtlMs });
    }
    const within = async (key: string): Promise<number> => {
      const ms = await redis.pttl(key);
      return ms > dlqTtlMs - 60_000 && ms <= dlqTtlMs ? dlqTtlMs : ms;
    };
    expect(await within(jobKeys.dlqEntry(dead.id))).toBe(dlqTtlMs);
    expect(await within(jobKeys.dlqIndexTenant(dead.tenant))).toBe(dlqTtlMs);
    const entry = (await s.getDlq(dead.id))!;
    await s.deleteDlq(entry);
    expect(await within(jobKeys.dlqDeleted(dead.id))).toBe(dlqTtlMs);
  });

  it('files no DLQ entry once DLQ_TTL from the job\'s end has passed: an expired or deleted entry does not come back while the record lives on (P304)', async () => {
    const dlqTtlMs = 3600 * 1000;
    let clock = Date.now();
    const s = createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000, dlqTtlMs, now: () => clock });
    const run = async (deleteIt: boolean): Promise<void> => {
      const dead = newJob({ tenant: `dlq-life-${deleteIt ? 'deleted' : 'expired'}` });
      const t = await drive(s, redis, dead, ['SCHEDULED']);
      expect((await s.transition(dead.id, 'FAILED', { token: t, patch: { error: { code: 'worker_error', message: 'boom' } } })).ok).toBe(true);
      const job = (await s.getJob(dead.id))!;
      // the entry ends DLQ_TTL after the job did, whenever it is written
      expect(Number(await redis.call('PEXPIRETIME', jobKeys.dlqEntry(dead.id)))).toBe(job.finishedAt! + dlqTtlMs);
      if (deleteIt) {
        await s.deleteDlq((await s.getDlq(dead.id))!);
        await redis.del(jobKeys.dlqDeleted(dead.id)); // the tombstone's DLQ_TTL has run out
      } else {
        // the entry's DLQ_TTL has run out (and the retention pass took its index entries)
        await redis.del(jobKeys.dlqEntry(dead.id));
        await redis.zrem(jobKeys.dlqIndex(), dead.id);
        await redis.zrem(jobKeys.dlqIndexTenant(dead.tenant), dead.id);
      }
      clock = job.finishedAt! + dlqTtlMs + 60_000;
      expect(await s.getJob(dead.id)).not.toBeNull(); // the record keeps its JOB_TTL
      // a late result, a repeated reject or a duplicate submit re-runs the write
      expect(await s.writeDlq(job)).toBe(false);
      expect({ entry: await s.getDlq(dead.id), listed: await redis.zscore(jobKeys.dlqIndexTenant(dead.tenant), dead.id) }).toEqual({ entry: null, listed: null });
      clock = Date.now();
    };
    await run(false);
    await run(true);
  });

  it('writes the DLQ entry for a job created DENIED', async () => {
    const j = newJob({ initialState: 'DENIED', safety: { decision: 'deny', reason: 'blocked topic', ruleId: 'r1', policySnapshot: 's1' } });
    await store.createJob(j);
    expect(await store.getDlq(j.id)).toMatchObject({ reason_code: 'policy_denied', last_state: 'DENIED', reason: 'blocked topic' });
  });

  it('never writes a DLQ entry for CANCELLED', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED', 'DISPATCHED']);
    expect((await store.transition(j.id, 'CANCELLED', { token })).ok).toBe(true);
    expect(TERMINAL_STATES.has('CANCELLED')).toBe(true);
    expect(await redis.exists(jobKeys.dlqEntry(j.id))).toBe(0);
    expect(await redis.zscore(jobKeys.dlqIndex(), j.id)).toBeNull();
  });

  it('calls onTransition after each committed transition only', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    await store.transition(j.id, 'RUNNING', { token }); // illegal: no hook call
    const mine = seen.filter((s) => s.job.id === j.id).map((s) => [s.from, s.job.state]);
    expect(mine).toEqual([[null, 'PENDING'], ['PENDING', 'SCHEDULED']]);
  });

  it('a RETRYING job that ends after its first attempt leaves job:retry with its terminal write (P140 files every retry there)', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED', 'DISPATCHED', 'RUNNING', 'RETRYING']);
    expect((await store.getJob(j.id))?.attempts ?? 0).toBeLessThanOrEqual(1);
    await store.scheduleRetry(j.id, Date.now() + 60_000);
    expect((await store.transition(j.id, 'CANCELLED', { token, from: ['RETRYING'] })).ok).toBe(true);
    expect(await redis.zscore(jobKeys.retry(), j.id)).toBeNull(); // the index moves are done when transition returns
  });

  it('broadcasts a committed transition whose index move failed (P144)', async () => {
    const j = newJob({ tenant: 'side-fail' });
    const token = await drive(store, redis, j, ['SCHEDULED', 'DISPATCHED']);
    // The tenant's CANCELLED listing is a string: the index move after the record's write fails.
    await redis.set(jobKeys.indexState('side-fail', 'CANCELLED'), 'x');
    try {
      await expect(store.transition(j.id, 'CANCELLED', { token, from: ['DISPATCHED'] })).rejects.toThrow(/WRONGTYPE/);
      expect((await store.getJob(j.id))?.state).toBe('CANCELLED');
      expect(seen.filter((s) => s.job.id === j.id).map((s) => [s.from, s.job.state]).at(-1)).toEqual(['DISPATCHED', 'CANCELLED']);
    } finally {
      await redis.del(jobKeys.indexState('side-fail', 'CANCELLED'));
    }
  });

  // P330: a terminal write whose reply was lost ran none of its side effects; nothing redid them.
  it('settleEnded runs the side effects of a terminal write whose reply was lost (DLQ entry, index move, broadcast), once, and repairIndex broadcasts such a job', async () => {
    const ended = async (tenant: string): Promise<JobRecord> => {
      const j = newJob({ tenant });
      const token = await drive(store, redis, j, ['SCHEDULED', 'DISPATCHED', 'RUNNING']);
      const r = await store.transition(j.id, 'FAILED', { token, patch: { error: { code: 'worker_error', message: 'boom' } } });
      if (!r.ok) throw new Error(r.reason);
      // As if the reply never came: the record is FAILED, nothing after the write ran.
      await redis.zadd(jobKeys.active('RUNNING'), r.job.updatedAt, j.id);
      await redis.zadd(jobKeys.indexState(tenant, 'RUNNING'), r.job.createdAt, j.id);
      await redis.zrem(jobKeys.indexState(tenant, 'FAILED'), j.id);
      await redis.del(jobKeys.dlqEntry(j.id));
      seen.splice(0, seen.length);
      return r.job;
    };
    const job = await ended('lost-reply');
    expect(await store.settleEnded(job)).toBe(true);
    expect(seen.map((e) => [e.from, e.job.state, e.job.id])).toEqual([['RUNNING', 'FAILED', job.id]]);
    expect(await redis.zscore(jobKeys.active('RUNNING'), job.id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('lost-reply', 'RUNNING'), job.id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('lost-reply', 'FAILED'), job.id)).not.toBeNull();
    expect(await store.getDlq(job.id)).toMatchObject({ reason_code: 'worker_error' });
    // Settled: a second redelivery finds it filed nowhere in flight and does nothing.
    expect(await store.settleEnded(job)).toBe(false);
    expect(await store.settleEnded({ ...job, state: 'RUNNING' })).toBe(false);
    expect(seen).toHaveLength(1);
    // A sweep's repair of such a job broadcasts it too.
    const swept = await ended('lost-reply-swept');
    await store.repairIndex(swept.id, 'RUNNING', swept);
    expect(seen.map((e) => [e.from, e.job.state, e.job.id])).toEqual([['RUNNING', 'FAILED', swept.id]]);
    expect(await redis.zscore(jobKeys.active('RUNNING'), swept.id)).toBeNull();
  });

  it('jobToApi gives the CONTRACT §2 shape with RFC 3339 ms times and the stored result', async () => {
    const j = newJob({ safety: { decision: 'allow', reason: 'ok', ruleId: 'r-allow', policySnapshot: 'snap' } });
    const token = await drive(store, redis, j, ['SCHEDULED', 'DISPATCHED']);
    await redis.set(jobKeys.res(j.id), JSON.stringify({ echo: 'hello' }));
    const r = await store.transition(j.id, 'SUCCEEDED', { token, patch: { resultPtr: jobKeys.resPtr(j.id), workerId: 'w1', dispatchedAt: 1_700_000_000_123 } });
    expect(r.ok).toBe(true);
    const job = (await store.getJob(j.id))!;
    const api = jobToApi(job, await store.readResult(job));
    const rfc3339ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
    expect(api).toEqual({
      id: j.id, state: 'SUCCEEDED', topic: 'job.echo', tenant: 'acme', trace_id: 'trace-1', priority: 'interactive',
      labels: { team: 'a' }, attempts: 0, context_ptr: `redis://ctx:${j.id}`, result_ptr: `redis://res:${j.id}`,
      result: { echo: 'hello' }, worker_id: 'w1',
      safety: { decision: 'allow', reason: 'ok', rule_id: 'r-allow', policy_snapshot: 'snap' },
      created_at: expect.stringMatching(rfc3339ms), updated_at: expect.stringMatching(rfc3339ms),
      dispatched_at: '2023-11-14T22:13:20.123Z', finished_at: expect.stringMatching(rfc3339ms),
    });
    await store.expireResult(job);
    expect(await redis.pttl(jobKeys.res(j.id))).toBeGreaterThan(0);
    // The error of an earlier, retried attempt stays in the record but is not the succeeded job's error.
    const retried = { ...job, error: { code: 'boom', message: 'attempt 1 failed' } };
    expect(jobToApi(retried, null).error).toBeUndefined();
    expect(jobToApi({ ...retried, state: 'RUNNING' }, null).error).toEqual({ code: 'boom', message: 'attempt 1 failed' });
    expect(jobToApi({ ...retried, state: 'FAILED' }, null).error).toEqual({ code: 'boom', message: 'attempt 1 failed' });
  });

  // P230: a job waiting for a worker says so, with why; a wait that is over is not shown.
  it('jobToApi shows the current wait for a worker of a PENDING or RETRYING job, and no wait that is over', async () => {
    const j = newJob();
    const created = await store.createJob(j);
    const since = created.createdAt + 1_000;
    const wait = { since, tries: 3, reason: 'no_worker_for_topic' as const, lastTryAt: since + 4_000 };
    const token = await holdLock(redis, j.id);
    expect((await store.patchJob(j.id, 'PENDING', { token, patch: { workerWait: wait } })).ok).toBe(true);
    const waiting = (await store.getJob(j.id))!;
    expect(jobToApi(waiting, null).worker_wait).toEqual({
      since: new Date(since).toISOString(), tries: 3, reason: 'no_worker_for_topic', last_try_at: new Date(since + 4_000).toISOString(),
    });
    expect(jobToApi({ ...waiting, state: 'RETRYING' }, null).worker_wait?.reason).toBe('no_worker_for_topic');
    // A wait recorded before `reason` existed is shown without it.
    expect(jobToApi({ ...waiting, workerWait: { since, tries: 2 } }, null).worker_wait).toEqual({ since: new Date(since).toISOString(), tries: 2 });
    // Over: the job was dispatched after the wait began, approved after it, or it left the waiting states.
    expect(jobToApi({ ...waiting, dispatchedAt: since + 1 }, null).worker_wait).toBeUndefined();
    const approval = { status: 'approved' as const, by: 'bob', at: since + 1, jobHash: 'h', policySnapshot: 's', ruleId: 'r', revision: 1 };
    expect(jobToApi({ ...waiting, approval }, null).worker_wait).toBeUndefined();
    for (const state of ['DISPATCHED', 'RUNNING', 'FAILED', 'APPROVAL_REQUIRED'] as const) expect(jobToApi({ ...waiting, state }, null).worker_wait).toBeUndefined();
  });

  // D16/D45 retention: the index ZSETs are refreshed by every write, so only the leader's trim
  // keeps them from growing with the whole history. Runs last: it trims every index in this Redis.
  describe('index retention', () => {
    const DAY = 24 * 3600 * 1000;
    const ttl = 7 * DAY;

    it('drops job index members created before now - TTL in every tenant and state, and DLQ members past 30 days; newer members and other ZSETs stay', async () => {
      const now = Date.now();
      // Real records written through the store, created 8 days ago and 6 days ago, in two tenants
      // (two slots on the cluster, so the SCAN has to visit more than one node).
      const at = (ms: number) => createJobStore(redis, { jobTtlMs: ttl, now: () => ms });
      const tenants = ['ret-a', 'ret-b'];
      const old: Record<string, string> = {};
      const young: Record<string, string> = {};
      for (const tenant of tenants) {
        const o = newJob({ tenant });
        const y = newJob({ tenant });
        await drive(at(now - 8 * DAY), redis, o, ['SCHEDULED', 'DISPATCHED']);
        await at(now - 6 * DAY).createJob(y);
        old[tenant] = o.id;
        young[tenant] = y.id;
        // Its record expired with the TTL it got 8 days ago (the fake clock does not age Redis keys).
        await redis.del(jobKeys.meta(o.id));
      }
      await redis.zadd(jobKeys.active('DISPATCHED'), now - 8 * DAY, 'in-flight-for-days');
      const dlq = [String(now - 31 * DAY), 'dlq-old', String(now - 29 * DAY), 'dlq-young'];
      await redis.zadd(jobKeys.dlqIndex(), ...dlq);
      await redis.zadd(jobKeys.dlqIndexTenant('ret-a'), ...dlq);

      const removed = await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS });
      // Per tenant: the old job in its state index (DISPATCHED) and in :all; the PENDING and
      // SCHEDULED members it left behind were removed by its moves.
      expect(removed.job).toBeGreaterThanOrEqual(4);
      expect(removed.dlq).toBeGreaterThanOrEqual(2);
      for (const tenant of tenants) {
        for (const key of [jobKeys.indexState(tenant, 'DISPATCHED'), jobKeys.indexAll(tenant)]) expect(await redis.zscore(key, old[tenant]!)).toBeNull();
        expect(await redis.zscore(jobKeys.indexState(tenant, 'PENDING'), young[tenant]!)).not.toBeNull();
        expect(await redis.zscore(jobKeys.indexAll(tenant), young[tenant]!)).not.toBeNull();
      }
      for (const key of [jobKeys.dlqIndex(), jobKeys.dlqIndexTenant('ret-a')]) {
        expect({ key, old: await redis.zscore(key, 'dlq-old'), young: (await redis.zscore(key, 'dlq-young')) !== null }).toEqual({ key, old: null, young: true });
      }
      // Not an index of the history: the reconciler's in-flight set is never trimmed by age.
      expect(await redis.zscore(jobKeys.active('DISPATCHED'), 'in-flight-for-days')).not.toBeNull();
      await redis.zrem(jobKeys.active('DISPATCHED'), 'in-flight-for-days');
      // A second pass has nothing left to do.
      expect(await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS })).toEqual({ job: 0, dlq: 0 });
    });

    it('reads the index keys from their registry after one scan: writers register them, keys that are gone leave it', async () => {
      const now = Date.now();
      // the first pass above has scanned once for keys written before the registry
      expect(await redis.exists(jobKeys.indexRegistryScanned())).toBe(1);
      const store = createJobStore(redis, { jobTtlMs: ttl, now: () => now - 8 * DAY });
      const j = newJob({ tenant: 'reg-a' });
      await store.createJob(j);
      await redis.del(jobKeys.meta(j.id)); // expired, as above
      // a write that refreshes an index key's TTL registers it, scored by that time
      expect(await redis.zscore(jobKeys.indexRegistry(), jobKeys.indexAll('reg-a'))).toBe(String(now - 8 * DAY));
      expect(await redis.zscore(jobKeys.indexRegistry(), jobKeys.indexState('reg-a', 'PENDING'))).not.toBeNull();
      // a DLQ write registers the tenant's DLQ index
      const f = newJob({ tenant: 'reg-b' });
      const token = await drive(store, redis, f, ['SCHEDULED', 'DISPATCHED']);
      expect((await store.transition(f.id, 'FAILED', { token, patch: { error: { code: 'boom', message: 'x' } } })).ok).toBe(true);
      await waitFor(async () => (await redis.zscore(jobKeys.indexRegistry(), jobKeys.dlqIndexTenant('reg-b'))) !== null, 2_000, { message: 'DLQ index registered' });

      // a registered key is trimmed; one not registered is not found any more (no scan)
      await redis.zadd(jobKeys.indexAll('reg-unlisted'), now - 8 * DAY, 'old');
      // a key refreshed lately but gone now (a trim emptied it; a writer may re-create it within its memo minute)
      await redis.zadd(jobKeys.indexRegistry(), now - 60_000, jobKeys.indexAll('reg-recent'));
      const removed = await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS });
      expect(removed.job).toBeGreaterThanOrEqual(2);
      expect(await redis.zscore(jobKeys.indexAll('reg-a'), j.id)).toBeNull();
      expect(await redis.zscore(jobKeys.indexAll('reg-unlisted'), 'old')).not.toBeNull();
      await redis.del(jobKeys.indexAll('reg-unlisted'));
      // the trim emptied reg-a's keys (Redis deletes an empty ZSET), last refreshed over a TTL ago: they left the registry
      expect(await redis.zscore(jobKeys.indexRegistry(), jobKeys.indexAll('reg-a'))).toBeNull();
      // one refreshed within its TTL stays registered though gone, so a re-created key is still trimmed
      expect(await redis.zscore(jobKeys.indexRegistry(), jobKeys.indexAll('reg-recent'))).not.toBeNull();
      await redis.zrem(jobKeys.indexRegistry(), jobKeys.indexAll('reg-recent'));
      expect(await redis.zscore(jobKeys.indexRegistry(), jobKeys.dlqIndexTenant('reg-b'))).not.toBeNull();
    });

    it('listHeld reads the held listings of every registered tenant, by creation time, and nothing else (P99)', async () => {
      const t0 = Date.now() - 10_000;
      const held = (tenant: string, at: number) =>
        createJobStore(redis, { jobTtlMs: ttl, now: () => at }).createJob(
          newJob({ tenant, initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'r', ruleId: 'r1', policySnapshot: 's' } }),
        );
      const a1 = await held('held-a', t0);
      const a2 = await held('held-a', t0 + 5_000);
      const b1 = await held('held-b', t0 + 1_000);
      const pending = await createJobStore(redis, { jobTtlMs: ttl, now: () => t0 }).createJob(newJob({ tenant: 'held-a' }));
      const ids = async (before: number, limit = 500) => (await store.listHeld(before, limit)).map((e) => e.id).filter((id) => [a1.id, a2.id, b1.id, pending.id].includes(id)).sort();
      expect(await ids(t0 + 2_000)).toEqual([a1.id, b1.id].sort());
      expect(await ids(t0 + 6_000)).toEqual([a1.id, a2.id, b1.id].sort());
      // at most `limit` per tenant, oldest first
      expect(await ids(t0 + 6_000, 1)).toEqual([a1.id, b1.id].sort());
      // a stale entry (the job moved on, its listing move lost) leaves the held listing when the
      // hold expiry's repair finds it, instead of taking one of the oldest places every pass
      const token = await holdLock(redis, a1.id);
      expect((await store.transition(a1.id, 'CANCELLED', { token, from: ['APPROVAL_REQUIRED'] })).ok).toBe(true);
      await redis.zadd(jobKeys.indexState('held-a', 'APPROVAL_REQUIRED'), a1.createdAt, a1.id);
      await store.repairIndex(a1.id, 'APPROVAL_REQUIRED', await store.getJob(a1.id));
      expect(await redis.zscore(jobKeys.indexState('held-a', 'APPROVAL_REQUIRED'), a1.id)).toBeNull();
      expect(await ids(t0 + 6_000)).toEqual([a2.id, b1.id].sort());
    });

    it('listHeld with a cursor reads on from where the last read stopped and wraps after a short page (P247)', async () => {
      const t0 = Date.now() - 20_000;
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const j = await createJobStore(redis, { jobTtlMs: ttl, now: () => t0 + i }).createJob(
          newJob({ tenant: 'held-cursor', initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'r', ruleId: 'r1', policySnapshot: 's' } }),
        );
        ids.push(j.id);
      }
      const key = jobKeys.indexState('held-cursor', 'APPROVAL_REQUIRED');
      const from = new Map<string, number>();
      const read = async () => (await store.listHeld(t0 + 100, 3, from)).map((e) => e.id).filter((id) => ids.includes(id));
      expect(await read()).toEqual(ids.slice(0, 3));
      expect(from.get(key)).toBe(3);
      expect(await read()).toEqual(ids.slice(3, 6));
      expect(await read()).toEqual(ids.slice(6));
      expect(from.has(key)).toBe(false);
      expect(await read()).toEqual(ids.slice(0, 3));
      // Without a cursor every read is the oldest three.
      expect((await store.listHeld(t0 + 100, 3)).map((e) => e.id).filter((id) => ids.includes(id))).toEqual(ids.slice(0, 3));
      // A listing the registry no longer names is forgotten.
      await redis.zrem(jobKeys.indexRegistry(), key);
      await store.listHeld(t0 + 100, 3, from);
      expect(from.has(key)).toBe(false);
    });

    it('keeps a job whose record outlived its index score (a renewed hold, P143) listed and found by listHeld until the record is gone', async () => {
      const now = Date.now();
      // Created 8 days ago and held; approved and held again 2 days ago, which renewed its record's
      // lifetime (P75, P99): its listings are still scored by its creation.
      const j = await createJobStore(redis, { jobTtlMs: ttl, now: () => now - 8 * DAY }).createJob(
        newJob({ tenant: 'ret-held', initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'r', ruleId: 'r1', policySnapshot: 's' } }),
      );
      const gone = newJob({ tenant: 'ret-held' });
      await createJobStore(redis, { jobTtlMs: ttl, now: () => now - 8 * DAY }).createJob(gone);
      await redis.del(jobKeys.meta(gone.id));
      // Many members below the cutoff, most of them kept, and a chunk of 3: the trim reads past the kept ones.
      const keptFiller: string[] = [];
      for (let i = 0; i < 7; i++) {
        const f = await createJobStore(redis, { jobTtlMs: ttl, now: () => now - 8 * DAY - i }).createJob(newJob({ tenant: 'ret-held' }));
        keptFiller.push(f.id);
      }
      const keys = [jobKeys.indexState('ret-held', 'APPROVAL_REQUIRED'), jobKeys.indexAll('ret-held')];
      await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS, chunk: 3 });
      for (const key of keys) expect({ key, listed: (await redis.zscore(key, j.id)) !== null }).toEqual({ key, listed: true });
      expect(await redis.zscore(jobKeys.indexAll('ret-held'), gone.id)).toBeNull();
      for (const id of keptFiller) expect(await redis.zscore(jobKeys.indexAll('ret-held'), id)).not.toBeNull();
      // The hold expiry (P99) reads the held listings: the job is still there to be ended.
      expect((await store.listHeld(now - 6 * DAY, 500)).map((e) => e.id)).toContain(j.id);
      // Once its record is gone too, the next pass trims it.
      for (const id of [j.id, ...keptFiller]) await redis.del(jobKeys.meta(id));
      await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS, chunk: 3 });
      for (const key of keys) expect(await redis.zscore(key, j.id)).toBeNull();
      for (const id of keptFiller) expect(await redis.zscore(jobKeys.indexAll('ret-held'), id)).toBeNull();
    });

    // P236: a DLQ job's record lives as long as its entry (30 days, P74); kept in the job indexes
    // for that long, it was looked at again in every pass (an EXISTS per DLQ job per pass).
    it('drops a DLQ job from the job indexes at JOB_TTL though its record lives on, and keeps it in the DLQ listing', async () => {
      const now = Date.now();
      const old = createJobStore(redis, { jobTtlMs: ttl, now: () => now - 8 * DAY });
      const j = newJob({ tenant: 'ret-dlq' });
      const token = await drive(old, redis, j, ['SCHEDULED']);
      expect((await old.transition(j.id, 'FAILED', { token, patch: { error: { code: 'worker_error', message: 'boom' } } })).ok).toBe(true);
      await redis.pexpire(jobKeys.meta(j.id), DLQ_TTL_MS); // as P74's DLQ write leaves it
      const keys = [jobKeys.indexState('ret-dlq', 'FAILED'), jobKeys.indexAll('ret-dlq')];
      for (const key of keys) expect(await redis.zscore(key, j.id)).not.toBeNull();
      await trimIndexes(redis, { nowMs: now, jobTtlMs: ttl, dlqTtlMs: DLQ_TTL_MS, chunk: 3 });
      for (const key of keys) expect({ key, listed: (await redis.zscore(key, j.id)) !== null }).toEqual({ key, listed: false });
      expect(await redis.exists(jobKeys.meta(j.id))).toBe(1);
      expect(await redis.zscore(jobKeys.dlqIndex(), j.id)).not.toBeNull();
    });

    it('pages past kept members by score, not by a growing offset, and keeps exactly the live ones among equal scores (P176)', async () => {
      const key = jobKeys.indexAll('ret-paging');
      const members: string[] = [];
      // 40 members below the cutoff, in groups of 4 sharing a score; every other one is live
      for (let i = 0; i < 40; i++) members.push(String(2_000 + Math.floor(i / 4)), `p${String(i).padStart(2, '0')}`);
      members.push('9000', 'young'); // at or after the cutoff: never touched
      await redis.zadd(key, ...members);
      const live = new Set(Array.from({ length: 40 }, (_, i) => `p${String(i).padStart(2, '0')}`).filter((_, i) => i % 2 === 0));
      const trim = () => trimIndex(redis, key, 9_000, 3, async (ids) => ids.map((id) => live.has(id)));
      if (redis.isCluster) {
        expect(await trim()).toBe(20); // the commands' offsets are read on standalone (one SLOWLOG)
      } else {
        await redis.config('SET', 'slowlog-log-slower-than', '0');
        await redis.config('SET', 'slowlog-max-len', '10000');
        await redis.slowlog('RESET');
        try {
          expect(await trim()).toBe(20);
          const log = (await redis.slowlog('GET', 10_000)) as [number, number, number, string[]][];
          const offsets = log.map((e) => e[3]).filter((args) => args[0]?.toLowerCase() === 'zrangebyscore' && args[1] === key).map((args) => Number(args[args.indexOf('LIMIT') + 1]));
          expect(offsets.length).toBeGreaterThan(10);
          // before P176 the offset grew with every member kept (up to 19 here)
          expect(Math.max(...offsets)).toBeLessThanOrEqual(3);
        } finally {
          await redis.config('SET', 'slowlog-log-slower-than', '10000');
        }
      }
      expect((await redis.zrange(key, '0', '-1')).sort()).toEqual([...live, 'young'].sort());
      await redis.del(key);
    });

    it('trims a long backlog a chunk per command, up to the cutoff exactly', async () => {
      const key = jobKeys.indexAll('ret-chunk');
      const members: string[] = [];
      for (let i = 0; i < 25; i++) members.push(String(1_000 + i), `m${i}`);
      await redis.zadd(key, ...members);
      expect(await trimIndex(redis, key, 1_020, 4)).toBe(20);
      expect(await redis.zrange(key, '0', '-1')).toEqual(['m20', 'm21', 'm22', 'm23', 'm24']);
      expect(await trimIndex(redis, key, 1_020, 4)).toBe(0);
      await redis.del(key);
    });
  });
});
