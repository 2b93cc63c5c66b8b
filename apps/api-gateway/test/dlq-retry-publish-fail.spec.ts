// A concurrent DLQ retry waiting on a winner whose publish fails (decisions.md
// P40, applied to D14). The waiting retry answered 200 `already_retried` with
// the winner's job as soon as its record existed, PENDING; the winner's publish
// then failed (NATS down), the job was failed at submit (D11, FAILED
// bus_unavailable) and the claim released: the caller held a 200 for a job
// that never runs. It now waits until the winner's submit settled, and a job
// failed at submit is not an answer.
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { jobKeys } from '@cordum/job-store';
import { KEYS, call, expectEnvelope } from './harness';
import { deadLetter, heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

let r: Replicas;
let redis: RedisClient;
let armed = false;
/** Once armed, the first Evaluate waits for the latch: the winner, between its claim and its record. */
const hold = heldEvaluator(() => armed);

let stop: () => Promise<void> = async () => undefined;
beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(2, hold));
});
afterAll(() => stop());

it('a retry waiting on a winner whose publish fails never answers 200 with the job failed at submit', async () => {
  const dead = await deadLetter(r.urls[0]!, redis, 'job.echo');
  armed = true;
  const claimKey = jobKeys.dlqRetry(dead);
  const first = call(r.urls[0]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  await waitFor(async () => hold.held() === 1 && (await redis.get(claimKey)) !== null, 5_000, { message: 'winner claimed, Evaluate held' });
  const winnerJob = await redis.get(claimKey);
  await r.nats.process.stop(5_000);

  const second = call(r.urls[1]!, 'POST', `/api/v1/dlq/${dead}/retry`, { key: KEYS.operator });
  hold.release(); // the winner records its job, PENDING, and its publish fails for the 2 s budget
  const [won, dup] = await Promise.all([first, second]);

  expectEnvelope(won, 503, 'bus_unavailable');
  expect(won.body['job_id']).toBe(winnerJob);
  // Before: 200 {job_id: <the winner's job>, status: already_retried}, a job that ended FAILED bus_unavailable.
  expect(dup.status).not.toBe(200);
  expectEnvelope(dup, 503, 'bus_unavailable');
  expect(dup.body['job_id']).not.toBe(winnerJob);
  const g = await call(r.urls[0]!, 'GET', `/api/v1/jobs/${String(winnerJob)}`, { key: KEYS.operator });
  expect(g.body['state']).toBe('FAILED');
  expect(await redis.exists(claimKey)).toBe(0);
}, 30_000);
