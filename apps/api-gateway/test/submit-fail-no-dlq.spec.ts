// D11: a submit whose publish fails is FAILED `bus_unavailable` with NO DLQ
// entry. The gateway's own CAS went through the store's normal transition,
// whose side writes filed a DLQ entry for any FAILED job: the 503'd job was
// listed by GET /api/v1/dlq, and an operator's DLQ retry ran a request its
// client had already retried with its Idempotency-Key (run twice). Now the
// store files no entry for a job failed at submit on any path (the CAS's side
// writes, repairIndex, a redelivered submit's re-run), and a DLQ retry refuses
// such an entry written before that (409).
import { createJobStore, jobKeys, type DlqEntry, type JobStore } from '@cordum/job-store';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { waitFor, type TestServer } from '@cordum/testing';
import { KEYS, call, expectEnvelope, startRig, type Rig } from './harness';

let rig: Rig;
let redis: RedisClient;
let store: JobStore;
let revived: TestServer | undefined;

beforeAll(async () => {
  rig = await startRig();
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'submit-fail-no-dlq' });
  // No hooks: what this store writes publishes nothing.
  store = createJobStore(redis, { jobTtlMs: 60_000 });
});
afterAll(async () => {
  await closeRedis(redis);
  await rig.stop();
  await revived?.stop();
});

const body = { prompt: 'pay invoice 42', topic: 'job.echo', idempotency_key: 'pay-42' };
let failedId = '';

async function expectNoDlqEntry(id: string): Promise<void> {
  expect(await store.getDlq(id)).toBeNull();
  expect(await redis.exists(jobKeys.dlqEntry(id))).toBe(0);
  expect(await redis.zscore(jobKeys.dlqIndex(), id)).toBeNull();
  expect(await redis.zscore(jobKeys.dlqIndexTenant('acme'), id)).toBeNull();
}

async function dlqListed(): Promise<string[]> {
  const list = await call(rig.url, 'GET', '/api/v1/dlq', { key: KEYS.operator });
  expect(list.status).toBe(200);
  return (list.body['items'] as Array<{ job_id: string }>).map((i) => i.job_id);
}

it('a submit failed at publish (503 bus_unavailable) gets no DLQ entry, on its CAS and on every re-run of the DLQ write', async () => {
  await rig.nats.process.stop(5_000);
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 503, 10_000, { message: 'readyz 503 without NATS' });
  const r = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expectEnvelope(r, 503, 'bus_unavailable');
  failedId = String(r.body['job_id']);
  const job = await store.getJob(failedId);
  expect(job).toMatchObject({ state: 'FAILED', attempts: 0, error: { code: 'bus_unavailable' } });
  // The CAS's side writes ran (the job left the in-flight index) and filed nothing.
  await waitFor(async () => (await redis.zscore(jobKeys.active('PENDING'), failedId)) === null, 5_000, { message: 'the failed job leaves job:active:PENDING' });
  await expectNoDlqEntry(failedId);

  // The other writers of a DLQ entry: a sweep's repairIndex (a job found in an in-flight index) and
  // a redelivered submit for a terminal job (the intake re-runs writeDlq, D14).
  await store.repairIndex(failedId, 'PENDING', job);
  expect(await store.writeDlq(job!)).toBe(false);
  expect(await store.writeDlq(job!, 'publish failed', { notify: false })).toBe(false);
  await expectNoDlqEntry(failedId);

  revived = await rig.nats.restart();
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 15_000, { message: 'readyz 200 after NATS returns' });
  expect(await dlqListed()).not.toContain(failedId);
  // No entry: nothing an operator could retry into a second run.
  expectEnvelope(await call(rig.url, 'POST', `/api/v1/dlq/${failedId}/retry`, { key: KEYS.operator, body: {} }), 404, 'dlq_not_found');

  // The client's own keyed retry is the one run of the request.
  const again = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(again.status).toBe(200);
  expect(again.body['job_id']).not.toBe(failedId);
}, 40_000);

it('a DLQ retry refuses an entry of a job failed at submit written before the fix (409, no claim, no new job)', async () => {
  expect(failedId).not.toBe('');
  const job = (await store.getJob(failedId))!;
  // The entry as the old side write filed it (what a gateway before the fix left in Redis).
  const entry: DlqEntry = {
    job_id: failedId,
    tenant: 'acme',
    topic: 'job.echo',
    reason: job.error!.message,
    reason_code: 'bus_unavailable',
    last_state: 'FAILED',
    attempts: 0,
    created_at: new Date(job.finishedAt!).toISOString(),
  };
  await redis.set(jobKeys.dlqEntry(failedId), JSON.stringify(entry), 'PX', 60_000);
  await redis.zadd(jobKeys.dlqIndex(), job.finishedAt!, failedId);
  await redis.zadd(jobKeys.dlqIndexTenant('acme'), job.finishedAt!, failedId);
  expect(await dlqListed()).toContain(failedId);

  const jobsBefore = await redis.zcard(jobKeys.indexAll('acme'));
  const kernelCalls = rig.kernel.calls.length;
  const retry = await call(rig.url, 'POST', `/api/v1/dlq/${failedId}/retry`, { key: KEYS.operator, body: {} });
  expectEnvelope(retry, 409, 'dlq_not_retryable');
  expect(retry.body).toMatchObject({ job_id: failedId, reason_code: 'bus_unavailable' });
  expect(String(retry.body['error'])).toMatch(/failed at submit/);
  // Refused before anything: no retry claim, no Evaluate, no new job.
  expect(await redis.exists(jobKeys.dlqRetry(failedId))).toBe(0);
  expect(rig.kernel.calls.length).toBe(kernelCalls);
  expect(await redis.zcard(jobKeys.indexAll('acme'))).toBe(jobsBefore);
  // An admin can still delete the entry.
  expect((await call(rig.url, 'DELETE', `/api/v1/dlq/${failedId}`, { key: KEYS.admin })).status).toBe(204);
  expect(await dlqListed()).not.toContain(failedId);
});
