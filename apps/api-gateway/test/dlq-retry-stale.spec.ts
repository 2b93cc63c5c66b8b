// DLQ retry with a claim holder that died or stalled (decisions.md P37). The
// winner of `dlq:retry:<id>` (SET NX, 30-day TTL) submits the new job; a
// winner SIGKILLed before its job existed used to block the entry for the
// claim's whole TTL (every retry waited 5 s and answered 409). A claim older
// than STALE_CLAIM_MS with no job is now freed by the next retry, and a winner
// that was only paused writes nothing once its claim is gone.
// The stall is the policy Evaluate between claim and record, held by a latch.
// A claim whose job was created is marked '<job id>:created' (P138), so a retry after that job's
// record expired (JOB_TTL, shorter than the claim's 30 days) is not taken for a dead winner's.
import { DLQ_TTL_MS, createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { STALE_CLAIM_MS } from '../src/submit/service';
import { KEYS, call, expectEnvelope } from './harness';
import { deadLetter as deadLetterVia, heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

/** How long ago a claim made now-ish looks once its TTL says it is older than STALE_CLAIM_MS. */
const STALE_TTL_MS = DLQ_TTL_MS - STALE_CLAIM_MS - 1_000;

let r: Replicas;
let redis: RedisClient;
let store: JobStore;
let armed = false;
/** Once armed, the first Evaluate of job.stall waits for the latch (the paused winner). */
const hold = heldEvaluator((req) => armed && req.topic === 'job.stall');

let stop: () => Promise<void> = async () => undefined;
beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(2, hold));
  store = createJobStore(redis, { jobTtlMs: 60_000 });
});
afterAll(() => stop());

const deadLetter = (topic: string): Promise<string> => deadLetterVia(r.urls[0]!, redis, topic);

it('a claim younger than STALE_CLAIM_MS is left to its holder: 409 dlq_retry_in_progress naming its job', async () => {
  const dead = await deadLetter('job.echo');
  await redis.set(jobKeys.dlqRetry(dead), 'live-holder', 'PX', DLQ_TTL_MS);
  const res = await call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expectEnvelope(res, 409, 'dlq_retry_in_progress');
  expect(res.body['job_id']).toBe('live-holder');
  expect(await redis.get(jobKeys.dlqRetry(dead))).toBe('live-holder');
});

it('a claim whose holder died before its job existed is freed after STALE_CLAIM_MS, and the retry creates the job', async () => {
  const dead = await deadLetter('job.echo');
  await redis.set(jobKeys.dlqRetry(dead), 'dead-holder', 'PX', STALE_TTL_MS);
  const res = await call(r.urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expect(res.status).toBe(200);
  const newId = String(res.body['job_id']);
  expect(newId).not.toBe('dead-holder');
  expect(res.body['status']).toBeUndefined();
  expect(res.body['retried_from']).toBe(dead);
  expect(await redis.get(jobKeys.dlqRetry(dead))).toBe(`${newId}:created`);
  expect(await store.getJob(newId)).toMatchObject({ state: 'PENDING', topic: 'job.echo' });
  expect(r.logs.some((l) => l.includes('freed a stale DLQ retry claim without a job') && l.includes('dead-holder'))).toBe(true);
  // Later retries answer with that job.
  const again = await call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expect(again.body).toMatchObject({ job_id: newId, status: 'already_retried' });
});

it('a winner paused past STALE_CLAIM_MS writes no job once its claim is replaced, and answers with the replacement', async () => {
  const dead = await deadLetter('job.stall');
  armed = true;
  const first = call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  const claimKey = jobKeys.dlqRetry(dead);
  await waitFor(async () => hold.held() === 1 && (await redis.get(claimKey)) !== null, 5_000, { message: 'first retry claimed and stalled' });
  const lostId = await redis.get(claimKey);
  await redis.pexpire(claimKey, STALE_TTL_MS);

  const second = await call(r.urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  expect(second.status).toBe(200);
  const newId = String(second.body['job_id']);
  expect(newId).not.toBe(lostId);
  expect(await redis.get(claimKey)).toBe(`${newId}:created`);

  hold.release(); // the paused winner resumes: its Evaluate answers, then it would write its record
  const late = await first;
  expect(late.status).toBe(200);
  expect(late.body).toMatchObject({ job_id: newId, status: 'already_retried', retried_from: dead });
  expect(await redis.exists(jobKeys.meta(lostId ?? ''))).toBe(0);
  expect(await store.getJob(newId)).toMatchObject({ state: 'PENDING', topic: 'job.stall' });
}, 30_000);

describe('a claim whose job was created (P138)', () => {
  const eightDaysOld = DLQ_TTL_MS - 8 * 24 * 3600_000;

  it('outlives the job it names: a retry after that job expired answers already_retried with no state and runs nothing again', async () => {
    const dead = await deadLetter('job.echo');
    const claimKey = jobKeys.dlqRetry(dead);
    const first = await call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
    expect(first.status).toBe(200);
    const newId = String(first.body['job_id']);
    expect(await redis.get(claimKey)).toBe(`${newId}:created`);
    // Eight days on: the new job ran its JOB_TTL (7 days) and its record expired; the claim (30 days) did not.
    await redis.del(jobKeys.meta(newId));
    await redis.pexpire(claimKey, eightDaysOld);
    const later = await call(r.urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
    expect(later.status).toBe(200);
    expect(later.body).toEqual({ job_id: newId, retried_from: dead, status: 'already_retried' });
    expect(await redis.get(claimKey)).toBe(`${newId}:created`);
    expect(r.logs.some((l) => l.includes('freed a stale DLQ retry claim without a job') && l.includes(newId))).toBe(false);
  });

  it('left unmarked by a winner that died after its create is marked by the next retry that finds the job', async () => {
    const dead = await deadLetter('job.echo');
    const claimKey = jobKeys.dlqRetry(dead);
    const first = await call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
    const newId = String(first.body['job_id']);
    await redis.set(claimKey, newId, 'KEEPTTL'); // as its winner left it, killed between the create and the mark
    const again = await call(r.urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
    expect(again.body).toMatchObject({ job_id: newId, status: 'already_retried', state: 'PENDING' });
    expect(await redis.get(claimKey)).toBe(`${newId}:created`);
  });
});
