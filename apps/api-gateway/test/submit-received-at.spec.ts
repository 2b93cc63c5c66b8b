// P321: a job's createdAt is when its submit arrived at the gateway, not when the gateway wrote the
// record after its own policy Evaluate: "submit → dispatch/result" (the metrics, the benchmark's
// figures) and a deadline count from the request, with the edge's work (auth, rate limit, the
// gateway's Check) in them. The Evaluate is held here, so that work takes a measurable time.
import { createJobStore } from '@cordum/job-store';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call } from './harness';
import { heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

let r: Replicas;
let redis: RedisClient;
const hold = heldEvaluator((req) => req.topic === 'job.edge');
let stop: () => Promise<void> = async () => undefined;

beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(1, hold));
});
afterAll(() => stop());

it('createdAt is the request\'s arrival, before the gateway\'s policy decision; the deadline counts from it', async () => {
  const sent = Date.now();
  const submit = call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic: 'job.edge', deadline_ms: 60_000 } });
  await waitFor(() => hold.held() === 1, 5_000, { message: 'the Evaluate is held' });
  const heldAt = Date.now();
  await waitFor(() => Date.now() > heldAt + 20, 1_000, { intervalMs: 5 }); // the decision takes a while
  hold.release();
  const res = await submit;
  expect(res.status).toBe(200);
  const job = (await createJobStore(redis, { jobTtlMs: 60_000 }).getJob(String(res.body['job_id'])))!;
  expect({ fromRequest: job.createdAt >= sent - 5 && job.createdAt <= heldAt }).toEqual({ fromRequest: true });
  expect(job.deadlineAt).toBe(job.createdAt + 60_000);
});
