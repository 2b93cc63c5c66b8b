// D25 with a winner whose publish fails (decisions.md P40). A duplicate that
// arrives while the first request of its key is still submitting used to
// answer 200 with the first request's job as soon as the record was there,
// PENDING; the first request's publish then failed (NATS down), the job was
// failed at submit (D11, FAILED bus_unavailable) and the key was released. The
// duplicate's client held a 200 for a job that never runs, and the key later
// answered with another job. Now a duplicate waits until the submit has
// settled, and a job failed at submit is not an answer: the duplicate takes
// the key itself and gets the same fault (503 bus_unavailable).
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call, expectEnvelope } from './harness';
import { heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

const KEY = 'publish-fails-1';
const CLAIM = `job:idempotency:acme:${KEY}`;

let r: Replicas;
let redis: RedisClient;
/** The first Evaluate waits for the latch, so the duplicate is queued behind a live winner. */
const hold = heldEvaluator();

let stop: () => Promise<void> = async () => undefined;
beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(2, hold));
});
afterAll(() => stop());

it('a duplicate waiting on a winner whose publish fails never answers 200 with the job failed at submit', async () => {
  const body = { prompt: 'x', topic: 'job.echo', idempotency_key: KEY };
  const first = call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  await waitFor(async () => hold.held() === 1 && (await redis.get(CLAIM)) !== null, 5_000, { message: 'winner claimed, Evaluate held' });
  const winnerJob = await redis.get(CLAIM);
  await r.nats.process.stop(5_000);

  const duplicate = call(r.urls[1]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  hold.release(); // the winner records its job, PENDING, and its publish fails for the 2 s budget
  const [won, dup] = await Promise.all([first, duplicate]);

  expectEnvelope(won, 503, 'bus_unavailable');
  expect(won.body['job_id']).toBe(winnerJob);
  // Before P40: 200 {job_id: <the winner's job>}, a job that ended FAILED bus_unavailable.
  expect(dup.status).not.toBe(200);
  expectEnvelope(dup, 503, 'bus_unavailable');
  expect(dup.body['job_id']).not.toBe(winnerJob);
  const g = await call(r.urls[0]!, 'GET', `/api/v1/jobs/${String(winnerJob)}`, { key: KEYS.operator });
  expect(g.body['state']).toBe('FAILED');
  expect(await redis.exists(CLAIM)).toBe(0);
}, 30_000);
