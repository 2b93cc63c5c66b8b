// P249: a DLQ retry's claim is marked '<job id>:created' (P138) by the create script itself, with
// the new job's record, on standalone Redis. The mark used to come only after the submit
// returned, so a winner whose create reply never came (503 submit_state_unknown: the create ran
// once Redis resumed) or that died between its create and the mark left a claim that looked like
// a dead winner's: a retry after the new job's record expired (JOB_TTL, shorter than the claim's
// DLQ_TTL) freed it as stale and ran the entry a second time.
import { DLQ_TTL_MS, createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call, expectEnvelope } from './harness';
import { deadLetter, heldEvaluator, startHeldReplicas, type HeldReplicas } from './replicas';

let held: HeldReplicas;
let redis: RedisClient;
let store: JobStore;
let armed = false;
/** Once armed, the first Evaluate waits for the latch: the winner, between its claim and its record. */
const hold = heldEvaluator(() => armed);

beforeAll(async () => {
  held = await startHeldReplicas(2, hold);
  redis = held.redis;
  store = createJobStore(redis, { jobTtlMs: 60_000 });
});
afterAll(() => held?.stop());

it('a winner whose create reply never came leaves its claim marked with the job, so a retry after the job expired runs nothing again', async () => {
  const { urls } = held.r;
  const dead = await deadLetter(urls[0]!, redis, 'job.echo');
  const claimKey = jobKeys.dlqRetry(dead);
  armed = true;
  const first = call(urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  await waitFor(async () => hold.held() === 1 && (await redis.get(claimKey)) !== null, 5_000, { message: 'retry claimed, at its Evaluate' });
  const newId = (await redis.get(claimKey)) ?? '';
  // Redis takes no write for 3 s: the create is sent, its reply misses the gateway's 1.5 s command
  // timeout, and it runs once Redis resumes.
  await redis.call('CLIENT', 'PAUSE', '3000', 'WRITE');
  hold.release();
  const res = await first;
  expectEnvelope(res, 503, 'submit_state_unknown');
  expect(res.body['job_id']).toBe(newId);
  await waitFor(async () => (await store.getJob(newId)) !== null, 10_000, { message: 'the create ran once Redis resumed' });
  expect(await redis.get(claimKey)).toBe(`${newId}:created`);
  // Eight days on: the new job's record expired (JOB_TTL), the claim (DLQ_TTL) did not. The entry
  // was retried once, and is not retried again.
  await redis.del(jobKeys.meta(newId));
  await redis.pexpire(claimKey, DLQ_TTL_MS - 8 * 24 * 3600_000);
  const later = await call(urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expect(later.body).toEqual({ job_id: newId, retried_from: dead, status: 'already_retried' });
  expect(await redis.get(claimKey)).toBe(`${newId}:created`);
}, 30_000);

it('a marked claim whose job was failed at submit (its winner died before releasing it) is freed by the next retry, which runs the entry', async () => {
  const { urls } = held.r;
  const dead = await deadLetter(urls[0]!, redis, 'job.echo');
  const claimKey = jobKeys.dlqRetry(dead);
  // The winner's job: created (the create marked the claim), then failed at submit (D11) as its publish failed.
  const s = await call(urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'again', topic: 'job.echo' } });
  const failed = String(s.body['job_id']);
  const lease = await createLocks(redis).acquire({ key: jobKeys.lock(failed), fenceKey: jobKeys.fence(failed), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  expect((await store.transition(failed, 'FAILED', { token: lease!.token, patch: { error: { code: 'bus_unavailable', message: 'bus down' } } })).ok).toBe(true);
  await lease!.release();
  await redis.set(claimKey, `${failed}:created`, 'PX', DLQ_TTL_MS - 60_000);
  const res = await call(urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expect(res.status).toBe(200);
  expect(res.body['status']).toBeUndefined();
  const newId = String(res.body['job_id']);
  expect(newId).not.toBe(failed);
  expect(await redis.get(claimKey)).toBe(`${newId}:created`);
  expect(held.r.logs.some((l) => l.includes('freed a DLQ retry claim whose job failed at submit') && l.includes(failed))).toBe(true);
}, 30_000);
