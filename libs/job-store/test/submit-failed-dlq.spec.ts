// D11: a job failed at submit (FAILED `bus_unavailable`, never dispatched) gets
// no DLQ entry from any writer (a transition's side writes, awaited or pushed
// onto sideWrites, repairIndex, a re-run of writeDlq), and no onDlq notice; a
// job that failed any other way, or a dispatched job whose worker reported
// `bus_unavailable`, still does (D14).
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedis, type TestServer } from '@cordum/testing';
import { createJobStore, failedAtSubmit, jobKeys, SUBMIT_FAILED_CODE, type DlqEntry, type JobRecord, type JobStore } from '../src';
import { drive, holdLock, newJob } from './helpers';

let server: TestServer;
let redis: RedisClient;
let store: JobStore;
const dlqSeen: Array<{ job: JobRecord; entry: DlqEntry }> = [];

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  store = createJobStore(redis, { jobTtlMs: 60_000, onDlq: (job, entry) => dlqSeen.push({ job, entry }) });
});
afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

const submitFailure = { code: SUBMIT_FAILED_CODE, message: 'publish to sys.job.submit failed' };

async function expectNoEntry(id: string): Promise<void> {
  expect(await store.getDlq(id)).toBeNull();
  expect(await redis.zscore(jobKeys.dlqIndex(), id)).toBeNull();
  expect(await redis.zscore(jobKeys.dlqIndexTenant('acme'), id)).toBeNull();
  expect(dlqSeen.filter((s) => s.job.id === id)).toEqual([]);
}

it('failedAtSubmit: FAILED bus_unavailable with no attempt, for a record or a DLQ entry', () => {
  expect(SUBMIT_FAILED_CODE).toBe('bus_unavailable');
  expect(failedAtSubmit('FAILED', 'bus_unavailable', 0)).toBe(true);
  expect(failedAtSubmit('FAILED', 'bus_unavailable', 1)).toBe(false);
  expect(failedAtSubmit('FAILED', 'worker_error', 0)).toBe(false);
  expect(failedAtSubmit('FAILED', undefined, 0)).toBe(false);
  expect(failedAtSubmit('TIMEOUT', 'bus_unavailable', 0)).toBe(false);
});

it.each([
  ['awaited', false],
  ['pushed onto sideWrites', true],
])('PENDING → FAILED bus_unavailable files no DLQ entry (side writes %s), and leaves the in-flight index', async (_how, deferred) => {
  const j = newJob();
  await store.createJob(j);
  const token = await holdLock(redis, j.id);
  const sideWrites: Promise<void>[] = [];
  const r = await store.transition(j.id, 'FAILED', { token, from: ['PENDING'], patch: { error: submitFailure }, ...(deferred ? { sideWrites } : {}) });
  expect(r.ok).toBe(true);
  await Promise.all(sideWrites);
  expect(r.ok && r.job).toMatchObject({ state: 'FAILED', attempts: 0, error: submitFailure });
  await expectNoEntry(j.id);
  // The rest of the side writes still ran.
  expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
  expect(await redis.zscore(jobKeys.indexState('acme', 'FAILED'), j.id)).not.toBeNull();
});

it('repairIndex and a re-run of writeDlq (a redelivered submit for the terminal job) file none either', async () => {
  const j = newJob();
  await store.createJob(j);
  const token = await holdLock(redis, j.id);
  expect((await store.transition(j.id, 'FAILED', { token, from: ['PENDING'], patch: { error: submitFailure } })).ok).toBe(true);
  // Back in job:active:PENDING, as a write whose index move was lost leaves it for a sweep.
  await redis.zadd(jobKeys.active('PENDING'), Date.now(), j.id);
  const job = (await store.getJob(j.id))!;
  await store.repairIndex(j.id, 'PENDING', job);
  expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
  expect(await store.writeDlq(job)).toBe(false);
  expect(await store.writeDlq(job, 'publish failed', { notify: false })).toBe(false);
  await expectNoEntry(j.id);
});

it('still files the entry of a job FAILED otherwise at PENDING, and of a dispatched job whose worker reported bus_unavailable (D14)', async () => {
  const pending = newJob();
  await store.createJob(pending);
  const t1 = await holdLock(redis, pending.id);
  expect((await store.transition(pending.id, 'FAILED', { token: t1, from: ['PENDING'], patch: { error: { code: 'no_worker', message: 'no worker' } } })).ok).toBe(true);
  expect(await store.getDlq(pending.id)).toMatchObject({ job_id: pending.id, reason_code: 'no_worker', last_state: 'FAILED', attempts: 0 });

  const ran = newJob();
  const t2 = await drive(store, redis, ran, ['SCHEDULED']);
  const dispatch = { dispatchId: 'd-1', attempt: 1, published: true, subject: 'job.echo', workerId: 'w1' };
  expect((await store.transition(ran.id, 'DISPATCHED', { token: t2, from: ['SCHEDULED'], patch: { dispatch, attempts: 1, dispatchedAt: Date.now() } })).ok).toBe(true);
  expect((await store.transition(ran.id, 'FAILED', { token: t2, from: ['DISPATCHED'], patch: { error: { code: 'bus_unavailable', message: 'the worker lost its bus' } } })).ok).toBe(true);
  expect(await store.getDlq(ran.id)).toMatchObject({ job_id: ran.id, reason_code: 'bus_unavailable', last_state: 'FAILED', attempts: 1 });
  expect(dlqSeen.filter((s) => s.job.id === ran.id)).toHaveLength(1);
});
