// P70: the replayer leader's slot turn reads a group's holders and waiters and their jobs'
// states, then drops the members it judged to be there for nothing. What it read may be old by
// then (a slow round trip, a GC pause, a leader frozen and resumed): a holder may have taken its
// slot again and be dispatching, a waiter held for approval may be back in line. Neither may lose
// its place to the stale verdict; members that still hold or wait for nothing are dropped as
// before. Against real Redis, with the real job store and locks; the pause is a store seam
// holding the turn right after it read the states of the members named.
import { createJobStore, jobKeys, type JobState, type JobStore, type NewJob } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { Latch, startRedis, type TestServer } from '@cordum/testing';
import type { SchedulerContext } from '../src/context';
import { slotTurn } from '../src/slots';

const LOCK_TTL_MS = 200;

describe('slot turn: what the leader read is re-checked when it acts (P70, real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  let store: JobStore;
  let seq = 0;
  let group = '';
  /** The next jobStates read naming `id` waits, once it has read, until `resume` opens. */
  let pause: { id: string; paused: Latch; resume: Latch } | undefined;

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
    store = createJobStore(redis, { jobTtlMs: 3_600_000 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });
  beforeEach(async () => {
    seq += 1;
    group = `acme-${seq}/one`;
    await redis.del(jobKeys.slotGroups()); // each test's turns look at its own group only
  });

  /** What slotTurn uses of the scheduler's context, over the real store (seamed) and locks. */
  function context(): SchedulerContext {
    const seamed: JobStore = {
      ...store,
      async jobStates(ids) {
        const states = await store.jobStates(ids);
        const p = pause;
        if (p && ids.includes(p.id)) {
          pause = undefined;
          p.paused.open();
          await p.resume.promise;
        }
        return states;
      },
    };
    const logger = createLogger({ service: 'scheduler', instance: 'slot-race', level: 'error', write: () => undefined });
    return {
      store: seamed,
      locks: createLocks(redis),
      instanceId: 'slot-race',
      config: { jobLockTtlMs: LOCK_TTL_MS, lockWaitMs: 50 },
      metrics: { slotWakes: { inc: () => undefined } },
      logger,
    } as unknown as SchedulerContext;
  }
  /** Starts a turn that pauses once it has read the state of `id`; answers the turn and its latches. */
  async function turnPausedAt(id: string): Promise<{ turn: Promise<number>; resume: () => void }> {
    const p = { id, paused: new Latch(), resume: new Latch() };
    pause = p;
    const turn = slotTurn(context(), Date.now());
    await p.paused.wait();
    return { turn, resume: () => p.resume.open() };
  }
  async function job(name: string): Promise<string> {
    const id = `${name}-${process.pid}-${seq}`;
    const j: NewJob = { id, tenant: 'acme', topic: 'job.one', traceId: 't', priority: 'batch', labels: {}, prompt: 'p', context: null, principalId: 'u', riskTags: [], requires: [], initialState: 'PENDING' };
    await store.createJob(j);
    return id;
  }
  /** Stands for the fenced write that would put the job in `state` (only the state field changes here). */
  const setState = (id: string, state: JobState) => redis.hset(jobKeys.meta(id), 'state', state);
  const holders = async () => redis.zrange(jobKeys.slots(group), '0', '-1');
  const waiters = async () => redis.zrange(jobKeys.slotWaiters(group), '0', '-1');
  const woken = async (id: string) => (await redis.zscore(jobKeys.retry(), id)) !== null;
  const afterLockTtl = () => new Promise((r) => setTimeout(r, LOCK_TTL_MS + 100));

  it('a holder that took its slot again between the read and the drop keeps it, and no waiter is let in beside it', async () => {
    const x = await job('x');
    const w = await job('w');
    // X took the one slot (and its replica died before the dispatch write); W waits.
    expect(await store.acquireSlot(group, x, 1)).toBe(true);
    expect(await store.acquireSlot(group, w, 1)).toBe(false);
    await afterLockTtl(); // X, PENDING, has held its slot longer than a lock TTL: idle at the read
    const { turn, resume } = await turnPausedAt(x);
    // Meanwhile X's submit is redelivered to another replica: its look keeps the slot, then it is dispatched.
    expect(await store.acquireSlot(group, x, 1)).toBe(true);
    await setState(x, 'DISPATCHED');
    resume();
    await turn;
    // Before: X dropped and W woken, which then took the one slot too: two jobs out under a limit of 1.
    expect(await holders()).toEqual([x]);
    expect(await woken(w)).toBe(false);
    expect(await store.acquireSlot(group, w, 1)).toBe(false);
  });

  it('a holder nobody re-took is still dropped, and the longest waiter is woken into the freed slot', async () => {
    const x = await job('x');
    const w = await job('w');
    expect(await store.acquireSlot(group, x, 1)).toBe(true);
    expect(await store.acquireSlot(group, w, 1)).toBe(false);
    await afterLockTtl();
    expect(await slotTurn(context(), Date.now())).toBe(1);
    expect(await holders()).toEqual([]);
    expect(await woken(w)).toBe(true);
    expect(await store.acquireSlot(group, w, 1)).toBe(true);
  });

  it('a waiter held for approval at the read and back in line before the drop keeps its place', async () => {
    const h = await job('h');
    const a = await job('a');
    const b = await job('b');
    expect(await store.acquireSlot(group, h, 1)).toBe(true);
    expect(await store.acquireSlot(group, a, 1)).toBe(false);
    expect(await store.acquireSlot(group, b, 1)).toBe(false);
    await setState(h, 'SUCCEEDED'); // the holder ended (its slot's removal lost to a crash): one slot free
    await setState(a, 'APPROVAL_REQUIRED'); // A's look was answered REQUIRE_APPROVAL: held, still queued
    const { turn, resume } = await turnPausedAt(a);
    // Meanwhile A is approved (PENDING again) and its submit is on the way, or its look already
    // found it queued in its place (the acquire script keeps a waiter's first score).
    await setState(a, 'PENDING');
    resume();
    await turn;
    // Before: A was dropped from the queue, so B went ahead of it.
    expect(await waiters()).toEqual([a, b]);
    // The next turn wakes it, first.
    expect(await slotTurn(context(), Date.now())).toBe(1);
    expect(await woken(a)).toBe(true);
    expect(await woken(b)).toBe(false);
  });

  it('waiters still held for approval, or ended, leave the queue; one whose lock is busy is left to the next turn; the PENDING ones behind are woken', async () => {
    const held = await job('held');
    const ended = await job('ended');
    const busy = await job('busy');
    const next = await job('next');
    for (const id of [held, ended, busy, next]) expect(await store.acquireSlot(group, id, 0)).toBe(false);
    await setState(held, 'APPROVAL_REQUIRED');
    await setState(ended, 'CANCELLED');
    await setState(busy, 'APPROVAL_REQUIRED');
    await redis.set(jobKeys.lock(busy), 'gateway:1', 'PX', 10_000); // an approval in progress
    await redis.hset(jobKeys.slotLimits(), group, '4');
    expect(await slotTurn(context(), Date.now())).toBe(1);
    expect(await waiters()).toEqual([busy, next]);
    expect(await woken(next)).toBe(true);
    await redis.del(jobKeys.lock(busy));
    await slotTurn(context(), Date.now());
    expect(await waiters()).toEqual([next]);
  });
});
