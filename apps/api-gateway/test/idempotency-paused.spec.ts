// D25 with a paused winner (decisions.md P21): a replica that stalls between its
// idempotency claim and its job record (SIGSTOP, a VM pause) for longer than
// STALE_CLAIM_MS is taken for dead, and a retry of the key on another replica
// frees the claim and creates the key's job. When the paused replica resumes, it
// must not create a second job for the key: it answers with the key's job.
// The stall is the policy Evaluate between claim and record, held by a latch.
import { scanKeys, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { STALE_CLAIM_MS } from '../src/submit/service';
import { KEYS, call } from './harness';
import { heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

const JOB_TTL_MS = 7 * 24 * 3600 * 1000;
const CLAIM = 'job:idempotency:acme:paused-1';

let r: Replicas;
let redis: RedisClient;
/** The first Evaluate waits for the test's latch (the paused replica). */
const hold = heldEvaluator();

let stop: () => Promise<void> = async () => undefined;
beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(2, hold));
});
afterAll(() => stop());

it('a replica paused past STALE_CLAIM_MS between claim and record answers with the job its replacement created, and writes no second job', async () => {
  const body = { prompt: 'once', topic: 'job.echo', idempotency_key: 'paused-1' };
  const first = call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  await waitFor(async () => hold.held() === 1 && (await redis.get(CLAIM)) !== null, 5_000, { message: 'first request claimed and stalled' });
  const lostId = await redis.get(CLAIM);
  // It has been paused for longer than any live submit takes (the claim's age is read from its TTL).
  await redis.pexpire(CLAIM, JOB_TTL_MS - STALE_CLAIM_MS - 1_000);

  const retry = await call(r.urls[1]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(retry.status).toBe(200);
  const jobId = String(retry.body['job_id']);
  expect(jobId).not.toBe(lostId);
  expect(await redis.get(CLAIM)).toBe(jobId);

  hold.release(); // the paused replica resumes: Evaluate answers, then it would write its record
  const late = await first;
  expect(late.status).toBe(200);
  expect(late.body['job_id']).toBe(jobId);
  expect(r.logs.some((l) => l.includes('idempotency claim taken over before the job was written'))).toBe(true);

  // One job for the key in Redis: the resumed replica wrote no record of its own.
  const records: string[] = [];
  for await (const k of scanKeys(redis, 'job:meta:{*}')) if ((await redis.hget(k, 'idempotencyKey')) === JSON.stringify('paused-1')) records.push(k);
  expect(records).toEqual([`job:meta:{${jobId}}`]);
  expect(await redis.exists(`job:meta:{${lostId}}`)).toBe(0);
});
