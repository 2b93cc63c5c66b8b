// The gateway's job lock (D5) keeps CONTRACT §5's terms: 30 s, renewed every TTL/3 while an
// operation holds it, deleted at release. On a real redis-server.
import { committedBeforeError, createJobStore, jobKeys } from '@cordum/job-store';
import { createLocks, type Locks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { Latch, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { storeCall, storeWrite } from '../src/http/store-call';
import { JOB_LOCK_TTL_MS, acquireJobLock, releaseJobLock } from '../src/job-lock';

let server: TestServer;
let redis: RedisClient;
let locks: Locks;
const deps = () => ({ locks, instanceId: 'gw-lock-spec', logger: createLogger({ service: 'test', instance: 't', level: 'error', write: () => undefined }) });

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'job-lock-spec' });
  locks = createLocks(redis);
});
afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

it('is taken for 30 s, renewed while held (past a third of the TTL it is back near 30 s), and deleted at release', async () => {
  expect(JOB_LOCK_TTL_MS).toBe(30_000);
  const lease = await acquireJobLock(deps(), 'job-a');
  expect(lease).not.toBeNull();
  expect(await redis.get(jobKeys.lock('job-a'))).toBe(lease!.token);
  expect(await redis.pttl(jobKeys.lock('job-a'))).toBeGreaterThan(29_000);
  // Renewed every TTL/3 (10 s): the TTL only falls between renewals, so a rise is a renewal.
  const ttl = () => redis.pttl(jobKeys.lock('job-a'));
  let last = await ttl();
  const t0 = performance.now();
  let prevAt = t0; // when the read before the rise started: the renewal came after it
  let readAt = t0;
  await waitFor(async () => {
    prevAt = readAt;
    readAt = performance.now();
    const now = await ttl();
    const rose = now > last;
    last = now;
    return rose;
  }, 15_000, { intervalMs: 250, message: 'the lock renewed' });
  expect(performance.now() - t0).toBeGreaterThan(5_000); // not at once: on the TTL/3 schedule
  // back to the full TTL, less what has passed since the renewal at the latest (a fixed 29 s
  // failed when a loaded box read it more than a second late)
  expect(last).toBeGreaterThan(JOB_LOCK_TTL_MS - (performance.now() - prevAt) - 50);
  expect(await redis.get(jobKeys.lock('job-a'))).toBe(lease!.token);
  await releaseJobLock(deps(), lease!, 'job-a');
  expect(await redis.exists(jobKeys.lock('job-a'))).toBe(0);
}, 20_000);

it('a busy lock: null after the wait (0 = one try), and the holder keeps it', async () => {
  const held = await acquireJobLock(deps(), 'job-b');
  expect(await acquireJobLock(deps(), 'job-b', 0)).toBeNull();
  expect(await acquireJobLock(deps(), 'job-b', 200)).toBeNull();
  expect(await redis.get(jobKeys.lock('job-b'))).toBe(held!.token);
  await releaseJobLock(deps(), held!, 'job-b');
});

it('a store call that outlives the request (3 s) hands what it produced to onLate, so a late job lock is released', async () => {
  const late = new Latch<string>();
  const slow = storeCall({ redisReady: () => true }, 'slow', () => new Promise<string>((r) => setTimeout(() => r('late lease'), 3_300)), (v) => late.open(v));
  await expect(slow).rejects.toMatchObject({ code: 'redis_unavailable' });
  expect(late.opened).toBe(false);
  expect(await late.wait(2_000)).toBe('late lease');
  // A call that fails after the timeout hands nothing over.
  let handed = false;
  const inner = new Promise<string>((_r, reject) => setTimeout(() => reject(new Error('down')), 3_100));
  const failing = storeCall({ redisReady: () => true }, 'failing', () => inner, () => (handed = true));
  await expect(failing).rejects.toMatchObject({ code: 'redis_unavailable' });
  await inner.catch(() => undefined); // resumes after storeCall's own handlers of `inner` ran
  expect(handed).toBe(false);
}, 15_000);

it('P258: a state change whose answer does not come (Redis frozen) is 503 state_unknown, and it did run; one never sent stays redis_unavailable', async () => {
  const ready = { redisReady: () => true };
  await server.process.freeze();
  try {
    await expect(storeWrite(ready, 'approve', () => redis.set('p258:approved', 'yes'))).rejects.toMatchObject({ code: 'state_unknown', status: 503 });
  } finally {
    server.process.kill('SIGCONT');
  }
  await waitFor(async () => (await redis.get('p258:approved')) === 'yes', 5_000, { message: 'the write ran after the thaw' });
  // Refused before it was written: the change did not happen, and the answer says so.
  await expect(storeWrite({ redisReady: () => false }, 'approve', () => redis.set('p258:never', 'x'))).rejects.toMatchObject({ code: 'redis_unavailable' });
  await expect(storeWrite(ready, 'approve', () => Promise.reject(new Error("Stream isn't writeable and enableOfflineQueue options is false")))).rejects.toMatchObject({ code: 'redis_unavailable' });
  expect(await redis.exists('p258:never')).toBe(0);
}, 20_000);

it('P258: a reject whose DENIED write committed but whose DLQ write failed is state_unknown; a write never sent or refused by the cluster is redis_unavailable', async () => {
  const ready = { redisReady: () => true };
  const store = createJobStore(redis, { jobTtlMs: 60_000 });
  const job = await store.createJob({ id: `p258-${process.pid}`, tenant: 'p258', topic: 'job.echo', traceId: 't', priority: 'interactive', labels: {}, prompt: 'x', context: null, principalId: 'alice', riskTags: [], requires: [], initialState: 'APPROVAL_REQUIRED' });
  await redis.set(jobKeys.dlqIndex(), 'not a sorted set'); // the DLQ entry's index write fails: WRONGTYPE
  try {
    const lease = await acquireJobLock(deps(), job.id);
    const reject = storeWrite(ready, 'reject', () => store.transition(job.id, 'DENIED', { token: lease!.token, from: ['APPROVAL_REQUIRED'], patch: { error: { code: 'approval_rejected', message: 'no' } }, dlqReason: 'no' }));
    const err = await reject.then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'state_unknown' });
    expect(committedBeforeError((err as Error).cause)).toBe(true);
    expect((await store.getJob(job.id))?.state).toBe('DENIED');
    await releaseJobLock(deps(), lease!, job.id);
  } finally {
    await redis.del(jobKeys.dlqIndex());
  }
  for (const refusal of ['Reached the max retries per request limit (which is 1). Refer to "maxRetriesPerRequest" option for details.', 'CLUSTERDOWN The cluster is down', 'Too many Cluster redirections. Last error: ReplyError: MOVED 1 127.0.0.1:1', 'Too many Cluster redirections. Last error: CLUSTERDOWN The cluster is down']) {
    await expect(storeWrite(ready, 'approve', () => Promise.reject(new Error(refusal)))).rejects.toMatchObject({ code: 'redis_unavailable' });
  }
  // Its connection closed, or its last try timed out (ioredis wraps that one too): it may have run.
  for (const maybe of ['Connection is closed.', 'Too many Cluster redirections. Last error: Error: Command timed out']) {
    await expect(storeWrite(ready, 'approve', () => Promise.reject(new Error(maybe)))).rejects.toMatchObject({ code: 'state_unknown' });
  }
  // An approve whose PENDING listing write (sent ahead of the transition) failed after it committed.
  const held = await store.createJob({ id: `p258-ahead-${process.pid}`, tenant: 'p258', topic: 'job.echo', traceId: 't', priority: 'interactive', labels: {}, prompt: 'x', context: null, principalId: 'alice', riskTags: [], requires: [], initialState: 'APPROVAL_REQUIRED' });
  await redis.set(jobKeys.active('PENDING'), 'not a sorted set');
  try {
    const lease = await acquireJobLock(deps(), held.id);
    const approve = storeWrite(ready, 'approve', () => store.transition(held.id, 'PENDING', { token: lease!.token, from: ['APPROVAL_REQUIRED'] }));
    await expect(approve).rejects.toMatchObject({ code: 'state_unknown' });
    expect((await store.getJob(held.id))?.state).toBe('PENDING');
    await releaseJobLock(deps(), lease!, held.id);
  } finally {
    await redis.del(jobKeys.active('PENDING'));
  }
});
