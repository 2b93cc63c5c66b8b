// P333: a job the kernel throttles waits out `retry_after_ms` as its NAKed submit. Its orphan clock
// (job:active:PENDING, scored by its create) was left as it was, so past SCHEDULER_PENDING_REPLAY_AGE
// the orphan sweep, seeing later submits delivered, took it for a lost one: it drove the job early
// (a Check before the wait was out), counted `orphan_replayed{reason="lost"}`, logged it, and filed
// a job:retry entry, a second loop of re-checks beside the message. The clock now moves to the end
// of the wait. Real Redis + NATS; the kernel throttles one topic for 20 s.
import { jobKeys } from '@cordum/job-store';
import { Decision, type PolicyCheckRequest } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const RETRY_AFTER_MS = 20_000;
let rig: SchedulerRig | undefined;
let kernel: TestKernel | undefined;
let worker: TestWorker | undefined;

function decide(req: PolicyCheckRequest): KernelAnswer {
  if (req.topic === 'job.llm.slow') return { decision: Decision.THROTTLE, ruleId: 'per-llm', reason: 'over', policySnapshot: 's', retryAfterMs: BigInt(RETRY_AFTER_MS) };
  return { decision: Decision.ALLOW, ruleId: 'allow', reason: 'ok', policySnapshot: 's' };
}

beforeAll(async () => {
  kernel = await startTestKernel(decide);
  rig = await startSchedulerRig({ instanceId: 'sched-throttle-wait', kernelAddress: kernel.address, env: { SCHEDULER_PENDING_REPLAY_AGE: '3s', SCHEDULER_REPLAY_INTERVAL: '500ms' } });
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-throttle', topics: ['job.echo', 'job.llm.slow'], replyFor: () => 'succeed' });
  await waitFor(() => rig!.scheduler.workers.live().some((w) => w.workerId === 'tw-throttle'), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

it('a throttled job\'s orphan clock moves to the end of its wait, so the orphan sweep leaves it to its message', async () => {
  const r = rig!;
  const job = await r.submit('throttled-1', 'job.llm.slow');
  await waitFor(() => kernel!.checks.some((c) => c.jobId === job.id), 10_000, { message: 'first Check (THROTTLE)' });
  // Before: the clock stayed at the job's create.
  const clock = await waitFor(async () => {
    const score = Number(await r.redis.zscore(jobKeys.active('PENDING'), job.id));
    return score >= job.createdAt + RETRY_AFTER_MS - 1_000 ? score : null;
  }, 5_000, { message: 'orphan clock at the end of the throttle' });
  expect(clock).toBeLessThanOrEqual(Date.now() + RETRY_AFTER_MS + 1_000);
  // Later submits are delivered and run: the sweep's P35 horizon passes the throttled job's create.
  for (let i = 0; i < 3; i++) {
    const e = await r.submit(`after-${i}`, 'job.echo');
    await waitFor(async () => (await r.job(e.id)).state === 'SUCCEEDED', 10_000, { message: `${e.id} SUCCEEDED` });
  }
  expect(await r.counter('cordum_scheduler_orphan_replayed_total', { reason: 'lost' })).toBe(0);
  expect(await r.redis.zscore(jobKeys.retry(), job.id)).toBeNull();
  expect(kernel!.checks.filter((c) => c.jobId === job.id)).toHaveLength(1);
  expect((await r.job(job.id)).state).toBe('PENDING');
}, 60_000);
