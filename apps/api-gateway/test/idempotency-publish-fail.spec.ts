// D25 with a winner whose publish fails (decisions.md P40). A duplicate that
// arrives while the first request of its key is still submitting used to
// answer 200 with the first request's job as soon as the record was there,
// PENDING; the first request's publish then failed (NATS down), the job was
// failed at submit (D11, FAILED bus_unavailable) and the key was released. The
// duplicate's client held a 200 for a job that never runs, and the key later
// answered with another job. Now a duplicate waits until the submit has
// settled, and a job failed at submit is not an answer: the duplicate takes
// the key itself and gets the same fault (503 bus_unavailable).
import { expectNoAnswerFromFailedWinner, heldEvaluator, startHeldReplicas, type HeldReplicas } from './replicas';

const KEY = 'publish-fails-1';
const CLAIM = `job:idempotency:acme:${KEY}`;

let held: HeldReplicas;
/** The first Evaluate waits for the latch, so the duplicate is queued behind a live winner. */
const hold = heldEvaluator();

beforeAll(async () => {
  held = await startHeldReplicas(2, hold);
});
afterAll(() => held?.stop());

it('a duplicate waiting on a winner whose publish fails never answers 200 with the job failed at submit', async () => {
  await expectNoAnswerFromFailedWinner(held, hold, '/api/v1/jobs', { prompt: 'x', topic: 'job.echo', idempotency_key: KEY }, CLAIM);
}, 30_000);
