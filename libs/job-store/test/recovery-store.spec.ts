import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { REDIS_BACKENDS, startRedisBackend, waitFor, type RedisBackend } from '@cordum/testing';
import { CANCEL_OWED_AFTER_MS, CANCEL_RESEND_WINDOW_MS, cancelSent, createJobStore, encodeWorkerSnapshot, jobKeys, nextCancelResend, ownOutputKeys, parseWorkerSnapshot, readWorkerSnapshot, type JobRecord, type JobStore } from '../src';
import { createJobSlots } from '../src/slots';
import { drive, holdLock, newJob, uniqueId } from './helpers';

// The issue-3 additions: in-flight indexes and bounded scans, the D1 (b)
// reattempt guard against worker-sdk's claim, same-state patches, deadline
// index, and the worker snapshot codec/reader for GET /api/v1/workers.
describe.each(REDIS_BACKENDS)('job-store recovery support (%s Redis)', (kind) => {
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

  const dispatch = (id: string, n = 1) => ({ dispatchId: id, attempt: n, published: true, subject: 'worker.w1.jobs', workerId: 'w1', startAck: true });

  it('keeps every in-flight job in exactly one job:active:<state> index, scored by state entry, and drops it when terminal', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    const r = await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch: dispatch('d1'), attempts: 1 } });
    expect(r.ok).toBe(true);
    const score = Number(await redis.zscore(jobKeys.active('DISPATCHED'), j.id));
    expect(r.ok && score).toBe(r.ok && r.job.updatedAt);
    expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).toBeNull();
    const due = await store.listActive('DISPATCHED', score, 10);
    expect(due.map((e) => e.id)).toContain(j.id);
    expect((await store.listActive('DISPATCHED', score - 1, 10)).map((e) => e.id)).not.toContain(j.id);
    await store.transition(j.id, 'SUCCEEDED', { token });
    for (const s of ['PENDING', 'SCHEDULED', 'DISPATCHED', 'RUNNING', 'RETRYING'] as const) expect(await redis.zscore(jobKeys.active(s), j.id)).toBeNull();
  });

  it('P70 slots: at most `limit` holders; a freed slot goes to the longest waiter, not a newcomer; a terminal write gives a queue place back', async () => {
    const g = `${uniqueId('tenant')}/rule-1`;
    expect(await store.acquireSlot(g, 'a', 1)).toBe(true);
    expect(await store.acquireSlot(g, 'a', 1)).toBe(true); // held already: still true, nothing added
    expect(await store.acquireSlot(g, 'b', 1)).toBe(false);
    expect(await store.acquireSlot(g, 'c', 1)).toBe(false);
    expect(await store.acquireSlot(g, 'b', 1)).toBe(false); // keeps its place
    expect((await store.slotHolders(g, 10)).map((h) => h.id)).toEqual(['a']);
    expect(await store.slotWaiters(g, 10)).toEqual(['b', 'c']);
    expect(await store.listSlotGroups()).toContain(g);
    expect(await store.slotLimit(g)).toBe(1);
    expect(await store.nextSlotWaiter(g, 1)).toBeUndefined(); // every slot held: nothing to hand off
    expect(await store.nextSlotWaiter(g, 2)).toBe('b');
    await store.dropSlotMembers(g, ['a'], []);
    expect(await store.nextSlotWaiter(g, 1)).toBe('b');
    expect(await store.acquireSlot(g, 'newcomer', 1)).toBe(false); // b and c waited longer
    expect(await store.acquireSlot(g, 'c', 1)).toBe(false); // b is first
    expect(await store.acquireSlot(g, 'b', 1)).toBe(true);
    expect(await store.slotWaiters(g, 10)).toEqual(['c', 'newcomer']);
    // A raised limit lets as many of the first waiters in as it frees slots, in order.
    expect(await store.acquireSlot(g, 'newcomer', 2)).toBe(false);
    expect(await store.acquireSlot(g, 'c', 2)).toBe(true);
    expect(await store.acquireSlot(g, 'newcomer', 2)).toBe(false);
    expect(await store.acquireSlot(g, 'newcomer', 3)).toBe(true);
    expect(await store.slotLimit(g)).toBe(3);

    // A job recorded in the group leaves its queue with its terminal write.
    const j = newJob();
    const token = await drive(store, redis, j, []);
    expect(await store.acquireSlot(g, j.id, 3)).toBe(false);
    expect((await store.patchJob(j.id, 'PENDING', { token, patch: { concurrency: { group: g, limit: 3 } } })).ok).toBe(true);
    expect(await store.jobStates([j.id, 'no-such-job'])).toEqual(['PENDING', null]);
    await store.transition(j.id, 'CANCELLED', { token });
    await waitFor(async () => (await store.slotWaiters(g, 10)).length === 0, 5_000, { message: 'queue place given back' });
    await store.dropSlotGroupIfIdle(g);
    expect(await store.listSlotGroups()).not.toContain(g);
    // A holder's look refreshes its score; a wake keeps a retry already filed (a throttle's later one).
    const [before] = await store.slotHolders(g, 1);
    expect(await store.acquireSlot(g, before?.id ?? '', 3)).toBe(true);
    expect((await store.slotHolders(g, 1))[0]?.score).toBeGreaterThanOrEqual(before?.score ?? Infinity);
    await store.scheduleRetry('later', 9_000_000_000_000);
    expect(await store.wakeWaiters(['later', 'now'], 1_000)).toBe(1);
    expect(await redis.zscore(jobKeys.retry(), 'later')).toBe('9000000000000');
    expect(await redis.zscore(jobKeys.retry(), 'now')).toBe('1000');
    await redis.zrem(jobKeys.retry(), 'later', 'now');
  });

  it('P70 slot limits: written only while the group has a queue, forgotten with its listing, and put back for a wait that raced the removal', async () => {
    const limitOf = async (g: string) => redis.hget(jobKeys.slotLimits(), g);
    // A group that never queues leaves no field (one per tenant and rule, for good, before).
    const calm = `${uniqueId('tenant')}/rule-calm`;
    expect(await store.acquireSlot(calm, 'a', 2)).toBe(true);
    expect(await store.acquireSlot(calm, 'b', 2)).toBe(true);
    expect(await limitOf(calm)).toBeNull();

    // A group with waiters keeps its limit through the leader's cleanup.
    const g = `${uniqueId('tenant')}/rule-lim`;
    expect(await store.acquireSlot(g, 'h', 1)).toBe(true);
    expect(await store.acquireSlot(g, 'w', 1)).toBe(false);
    await store.dropSlotGroupIfIdle(g);
    expect({ limit: await store.slotLimit(g), listed: (await store.listSlotGroups()).includes(g) }).toEqual({ limit: 1, listed: true });
    // Its queue drained (w took the freed slot): unlisted and its limit gone, holders or not.
    await store.dropSlotMembers(g, ['h'], []);
    expect(await store.acquireSlot(g, 'w', 1)).toBe(true);
    await store.dropSlotGroupIfIdle(g);
    expect({ limit: await limitOf(g), listed: (await store.listSlotGroups()).includes(g) }).toEqual({ limit: null, listed: false });
    // Drained entirely too; the next wait writes the limit again.
    await store.dropSlotMembers(g, ['w'], []);
    await store.dropSlotGroupIfIdle(g);
    expect(await limitOf(g)).toBeNull();
    expect(await store.acquireSlot(g, 'x', 1)).toBe(true);
    expect(await store.acquireSlot(g, 'y', 1)).toBe(false);
    expect(await store.slotLimit(g)).toBe(1);

    // A wait that lands between the cleanup's look at the queue and its removal of the limit: the
    // waiter is in the queue by the cleanup's re-check, which lists the group again and puts the
    // limit back (without it the leader would wake nobody there).
    const r = `${uniqueId('tenant')}/rule-race`;
    expect(await store.acquireSlot(r, 'held', 1)).toBe(true);
    let raced = false;
    const racing = new Proxy(redis, {
      get(target, prop) {
        if (prop === 'srem') {
          return async (...args: unknown[]) => {
            const out = await (target.srem as (...a: unknown[]) => Promise<number>).apply(target, args);
            if (args[0] === jobKeys.slotGroups() && args[1] === r && !raced) {
              raced = true;
              expect(await store.acquireSlot(r, 'late', 1)).toBe(false);
              expect(await store.slotLimit(r)).toBe(1);
            }
            return out;
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    await createJobSlots(racing, 3_600_000, Date.now).dropSlotGroupIfIdle(r);
    expect({ raced, limit: await store.slotLimit(r), listed: (await store.listSlotGroups()).includes(r) }).toEqual({ raced: true, limit: 1, listed: true });
    await store.dropSlotMembers(r, ['held'], ['late']);
    await store.dropSlotMembers(g, ['x'], ['y']);
    await store.dropSlotMembers(calm, ['a', 'b'], []);
    await Promise.all([r, g].map((x) => store.dropSlotGroupIfIdle(x)));
  });

  it('P71 output keys: only res:<id> and res:<id>:… are the job\'s; their bytes (a string\'s length, another type\'s memory), TTL and deletion', async () => {
    const id = uniqueId('out');
    expect(ownOutputKeys(id, [`redis://res:${id}`, `redis://res:${id}:a`, `redis://res:${id}`, `redis://res:${id}x`, `redis://${jobKeys.meta(id)}`, 's3://bucket/x', ''])).toEqual({
      keys: [`res:${id}`, `res:${id}:a`],
      foreign: [`redis://res:${id}x`, `redis://${jobKeys.meta(id)}`, 's3://bucket/x', ''],
    });
    await redis.set(`res:${id}`, 'x'.repeat(300));
    await redis.hset(`res:${id}:a`, 'f', 'y'.repeat(1_000));
    const bytes = await store.outputBytes([`res:${id}`, `res:${id}:a`, `res:${id}:missing`]);
    expect(bytes).toBeGreaterThanOrEqual(1_300);
    await store.expireOutputs([`res:${id}`, `res:${id}:a`]);
    expect(await redis.pttl(`res:${id}:a`)).toBeGreaterThan(3_000_000);
    await store.dropOutputs([`res:${id}`, `res:${id}:a`]);
    for (const k of [`res:${id}`, `res:${id}:a`]) expect(await redis.exists(k)).toBe(0);
  });

  it('reindex repairs an index left one step behind by a crash', async () => {
    const j = newJob();
    await drive(store, redis, j, ['SCHEDULED']);
    await redis.zadd(jobKeys.active('PENDING'), 1, j.id); // stale entry a crash could leave
    await store.reindex(j.id, 'PENDING', 'SCHEDULED', 5);
    expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
    expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).toBe('5');
    await store.scheduleRetry(j.id, 10);
    await store.reindex(j.id, 'SCHEDULED', 'SUCCEEDED', 6);
    expect(await redis.zscore(jobKeys.active('SCHEDULED'), j.id)).toBeNull();
    expect(await store.hasRetry(j.id)).toBe(false);
  });

  it('reattempt replaces an unclaimed attempt, and refuses one that a worker claimed (D1 b)', async () => {
    const j = newJob();
    const token = await drive(store, redis, j, ['SCHEDULED']);
    await store.transition(j.id, 'DISPATCHED', { token, patch: { dispatch: dispatch('a1'), attempts: 1 } });
    const ok = await store.reattempt(j.id, 'a1', { token, patch: { dispatch: dispatch('a2', 2), attempts: 2 } });
    expect(ok).toMatchObject({ ok: true, job: { state: 'DISPATCHED', attempts: 2, dispatch: { dispatchId: 'a2' } } });
    // a stale replace (a1 is no longer current) is a state_mismatch
    expect(await store.reattempt(j.id, 'a1', { token, patch: { attempts: 9 } })).toMatchObject({ ok: false, reason: 'state_mismatch' });
    // worker-sdk claimed a2 (claim-2.lua writes this hash): the attempt started, never redispatch
    await redis.hset(jobKeys.workerClaim(j.id), 'attempt', '2', 'dispatch_id', 'a2', 'worker_id', 'w1');
    expect(await store.reattempt(j.id, 'a2', { token, patch: { dispatch: dispatch('a3', 3), attempts: 3 } })).toMatchObject({ ok: false, reason: 'claimed' });
    expect((await store.getJob(j.id))?.dispatch?.dispatchId).toBe('a2');
    // fenced like every write
    expect(await store.reattempt(j.id, 'a2', { token: 'other:1', patch: {} })).toMatchObject({ ok: false, reason: 'fenced' });
  });

  it('fenceClaim closes an unclaimed attempt to claims and finds a claimed one (P49)', async () => {
    const j = newJob();
    // a claim of the attempt: it started, nothing written
    await redis.hset(jobKeys.workerClaim(j.id), 'attempt', '1', 'dispatch_id', 'f1', 'worker_id', 'w1');
    expect(await store.fenceClaim(j.id, 'f1', 1)).toBe(false);
    expect(await redis.hget(jobKeys.workerClaim(j.id), 'dispatch_id')).toBe('f1');
    // unclaimed attempt 2: fenced at its number (claim-2.lua then answers "stale" for it), TTL set
    expect(await store.fenceClaim(j.id, 'f2', 2)).toBe(true);
    expect(await redis.hgetall(jobKeys.workerClaim(j.id))).toEqual({ attempt: '2', dispatch_id: 'fenced:f2', worker_id: '' });
    expect(await redis.pttl(jobKeys.workerClaim(j.id))).toBeGreaterThan(3_000_000);
    // fencing again is idempotent; an older attempt is not written over a newer claim
    expect(await store.fenceClaim(j.id, 'f2', 2)).toBe(true);
    expect(await store.fenceClaim(j.id, 'f0', 1)).toBe(true);
    expect(await redis.hget(jobKeys.workerClaim(j.id), 'dispatch_id')).toBe('fenced:f2');
  });

  it('patchJob updates fields without a state change, fenced and state-checked', async () => {
    const j = newJob();
    await store.createJob(j);
    const token = await holdLock(redis, j.id);
    expect(await store.patchJob(j.id, 'PENDING', { token, patch: { scheduleTries: 3 } })).toMatchObject({ ok: true, job: { state: 'PENDING', scheduleTries: 3 } });
    expect(await store.patchJob(j.id, 'RETRYING', { token, patch: { scheduleTries: 4 } })).toMatchObject({ ok: false, reason: 'state_mismatch' });
    expect(await store.patchJob(j.id, 'PENDING', { token: 'x:1', patch: { scheduleTries: 4 } })).toMatchObject({ ok: false, reason: 'fenced' });
  });

  it('files deadline_ms jobs in job:deadline and lists only due ones', async () => {
    const j = newJob({ deadlineMs: 1000 });
    const created = await store.createJob(j);
    const at = created.deadlineAt ?? 0;
    expect((await store.listDeadlineDue(at - 1, 100)).map((e) => e.id)).not.toContain(j.id);
    expect((await store.listDeadlineDue(at, 100)).map((e) => e.id)).toContain(j.id);
    await store.setDeadline(j.id, null);
    expect((await store.listDeadlineDue(at, 100)).map((e) => e.id)).not.toContain(j.id);
  });

  it('job:retry entries are listed when due and removable', async () => {
    await store.scheduleRetry('r-1', 100);
    await store.scheduleRetry('r-2', 200);
    expect((await store.listRetryDue(150, 10)).map((e) => e.id)).toEqual(['r-1']);
    await store.removeRetry('r-1');
    expect(await store.hasRetry('r-1')).toBe(false);
    expect(await store.hasRetry('r-2')).toBe(true);
    // P338: taken only as read; an entry re-filed at another time stays.
    await store.scheduleRetry('r-2', 250);
    expect(await store.takeRetry('r-2', 200)).toBe(false);
    expect(await store.retryDueAt('r-2')).toBe(250);
    expect(await store.takeRetry('r-2', 250)).toBe(true);
    expect(await store.takeRetry('r-2', 250)).toBe(false);
    expect(await store.hasRetry('r-2')).toBe(false);
  });

  it('P134/P135 cancel outbox: filed, listed when due, re-filed after a send only while still there, removed once (true the first time)', async () => {
    const a = uniqueId('owed');
    const b = uniqueId('owed');
    await store.fileCancel(a, 100);
    await store.fileCancel(b, 300);
    expect((await store.listCancelsDue(200, 10)).map((e) => e.id)).toEqual([a]);
    const ended = { id: a, finishedAt: 1_000, updatedAt: 1_000, dispatch: dispatch('d-a') } as JobRecord;
    // Sent with an attempt out: due again CANCEL_OWED_AFTER_MS on.
    expect(await cancelSent(store, ended, true, 1_000)).toBe(true);
    expect(Number(await redis.zscore(jobKeys.cancelOutbox(), a))).toBe(1_000 + CANCEL_OWED_AFTER_MS);
    expect(await store.removeCancel(a)).toBe(true);
    expect(await store.removeCancel(a)).toBe(false);
    // The attempt answered before the writer re-filed it: it stays settled.
    expect(await cancelSent(store, ended, true, 1_000)).toBe(true);
    expect(await redis.zscore(jobKeys.cancelOutbox(), a)).toBeNull();
    // No attempt out at the end (a cancel of a PENDING job), or past the window: removed once sent.
    expect(await cancelSent(store, { ...ended, id: b }, false, 1_000)).toBe(false);
    expect(await redis.zscore(jobKeys.cancelOutbox(), b)).toBeNull();
    await store.fileCancel(b, 300);
    expect(await cancelSent(store, { ...ended, id: b }, true, 1_000 + CANCEL_RESEND_WINDOW_MS)).toBe(false);
    expect(await redis.zscore(jobKeys.cancelOutbox(), b)).toBeNull();
  });

  it('parks jobs per topic (P15): out of job:retry, orphan clock moved to the expiry and never back, listed by expiry, its expiry read back, unparked to job:retry, topic forgotten when empty', async () => {
    const j = newJob();
    await drive(store, redis, j, []);
    await store.scheduleRetry(j.id, 50);
    const topic = `job.park-${kind}`;
    await store.park(j.id, topic, 'PENDING', 5_000_000_000_000);
    await store.park('p-2', topic, 'PENDING', 4_000_000_000_000);
    expect(await store.hasRetry(j.id)).toBe(false);
    expect(Number(await redis.zscore(jobKeys.active('PENDING'), j.id))).toBe(5_000_000_000_000);
    await store.touchOrphanClock(j.id, 'PENDING', 1_000);
    expect(Number(await redis.zscore(jobKeys.active('PENDING'), j.id))).toBe(5_000_000_000_000);
    expect(await store.listParkedTopics()).toContain(topic);
    expect((await store.listParked(topic, 4_500_000_000_000, 10)).map((e) => e.id)).toEqual(['p-2']);
    expect((await store.listParked(topic, Infinity, 10)).map((e) => e.id)).toEqual(['p-2', j.id]);
    expect({ j: await store.parkedExpiry(topic, j.id), other: await store.parkedExpiry('job.elsewhere', j.id) }).toEqual({ j: 5_000_000_000_000, other: null });
    await store.unpark(topic, ['p-2']);
    expect(await store.parkedExpiry(topic, 'p-2')).toBeNull();
    await store.dropParkedTopicIfEmpty(topic);
    expect(await store.listParkedTopics()).toContain(topic);
    await store.unpark(topic, [j.id], 77);
    expect((await store.listRetryDue(77, 10)).map((e) => e.id)).toContain(j.id);
    // The orphan clock comes back from the expiry (P28), in the index that holds the job only.
    expect(Number(await redis.zscore(jobKeys.active('PENDING'), j.id))).toBe(77);
    expect(await redis.zscore(jobKeys.active('RETRYING'), j.id)).toBeNull();
    await store.dropParkedTopicIfEmpty(topic);
    expect(await store.listParkedTopics()).not.toContain(topic);
    await store.removeRetry(j.id);
  });

  it('readWorkerSnapshot gives the CONTRACT §2 items with online = now − last_heartbeat < 30 s (D41)', async () => {
    const now = 1_700_000_000_000;
    const raw = encodeWorkerSnapshot({
      captured_at: now,
      writer_id: 'scheduler-1',
      workers: [
        { worker_id: 'w-b', pool: 'default', active_jobs: 1, max_parallel_jobs: 4, capabilities: ['job.echo'], labels: { zone: 'a' }, cpu_load: 12, last_heartbeat: now - 1000, ready_topics: [], start_ack: true },
        { worker_id: 'w-a', pool: 'default', active_jobs: 0, max_parallel_jobs: 4, capabilities: [], labels: {}, cpu_load: 0, last_heartbeat: now - 31_000, ready_topics: [], start_ack: false },
      ],
    });
    await redis.set(jobKeys.workerSnapshot(), raw);
    const online = await readWorkerSnapshot(redis, { now });
    expect(online.items).toEqual([
      { worker_id: 'w-b', pool: 'default', active_jobs: 1, max_parallel_jobs: 4, capabilities: ['job.echo'], labels: { zone: 'a' }, cpu_load: 12, last_heartbeat: new Date(now - 1000).toISOString(), online: true },
    ]);
    const all = await readWorkerSnapshot(redis, { now, includeOffline: true });
    expect(all.items.map((w) => [w.worker_id, w.online])).toEqual([['w-a', false], ['w-b', true]]);
    expect(all.writer_id).toBe('scheduler-1');
    // fails closed on garbage; inside a valid envelope a malformed entry is skipped on its own
    expect(parseWorkerSnapshot('{"nope":1}')).toBeNull();
    expect(parseWorkerSnapshot(JSON.stringify({ captured_at: '2024-01-01T00:00:00Z', writer_id: 'x', workers: [] }))).toBeNull();
    const mixed = JSON.parse(raw) as { workers: unknown[] };
    mixed.workers.push({ junk: true }, { worker_id: 'w-c', last_heartbeat: 'yesterday' });
    expect(parseWorkerSnapshot(JSON.stringify(mixed))?.workers.map((w) => w.worker_id)).toEqual(['w-b', 'w-a']);
    // a time no Date can hold (toISOString would throw: GET /workers answered 500 on every gateway) is malformed too
    mixed.workers.push({ worker_id: 'w-d', last_heartbeat: 1e300 }, { worker_id: 'w-e', last_heartbeat: -5 });
    await redis.set(jobKeys.workerSnapshot(), JSON.stringify(mixed));
    expect((await readWorkerSnapshot(redis, { now, includeOffline: true })).items.map((w) => w.worker_id)).toEqual(['w-a', 'w-b']);
    expect(parseWorkerSnapshot(JSON.stringify({ ...mixed, captured_at: 1e300 }))).toBeNull();
    await redis.set(jobKeys.workerSnapshot(), 'not json');
    expect((await readWorkerSnapshot(redis)).items).toEqual([]);
  });
});

describe('P135 nextCancelResend', () => {
  it('sends again after as long as the job has been over (at least CANCEL_OWED_AFTER_MS), seven sends in all, none past the window', () => {
    const job = { finishedAt: 0, updatedAt: 0 };
    const sends = [0];
    for (let next = nextCancelResend(job, 0); next !== null; next = nextCancelResend(job, next)) sends.push(next);
    expect(sends).toEqual([0, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000]);
    expect(sends.every((t) => t <= CANCEL_RESEND_WINDOW_MS)).toBe(true);
    // A send late in the window is the last; a job's updatedAt stands in for a missing finishedAt.
    expect(nextCancelResend({ updatedAt: 0 }, 300_001)).toBeNull();
    expect(nextCancelResend({ updatedAt: 5_000 }, 5_000)).toBe(15_000);
  });
});
