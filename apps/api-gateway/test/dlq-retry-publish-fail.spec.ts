// A concurrent DLQ retry waiting on a winner whose publish fails (decisions.md
// P40, applied to D14). The waiting retry answered 200 `already_retried` with
// the winner's job as soon as its record existed, PENDING; the winner's publish
// then failed (NATS down), the job was failed at submit (D11, FAILED
// bus_unavailable) and the claim released: the caller held a 200 for a job
// that never runs. It now waits until the winner's submit settled, and a job
// failed at submit is not an answer.
import { jobKeys } from '@cordum/job-store';
import { deadLetter, expectNoAnswerFromFailedWinner, heldEvaluator, startHeldReplicas, type HeldReplicas } from './replicas';

let held: HeldReplicas;
let armed = false;
/** Once armed, the first Evaluate waits for the latch: the winner, between its claim and its record. */
const hold = heldEvaluator(() => armed);

beforeAll(async () => {
  held = await startHeldReplicas(2, hold);
});
afterAll(() => held?.stop());

it('a retry waiting on a winner whose publish fails never answers 200 with the job failed at submit', async () => {
  const dead = await deadLetter(held.r.urls[0]!, held.redis, 'job.echo');
  armed = true;
  await expectNoAnswerFromFailedWinner(held, hold, `/api/v1/dlq/${dead}/retry`, undefined, jobKeys.dlqRetry(dead));
}, 30_000);
