// P334: (a) a RETRYING job's `job:retry` entry owns the time of its next attempt (D13 backoff, D48
// busy wait), but a submit reaching it early (a redelivery after a lost ack, or the message still
// waiting out a capacity NAK when a hand-off had sent the job) sent the next attempt at once.
// (b) A THROTTLE of ≤ 100 ms was taken for a busy NAK (same delay value) and waited the lock-busy
// schedule, up to 5 s a delivery. Real Redis + NATS; executions counted on the worker.
import { jobKeys } from '@cordum/job-store';
import { Decision, JobStatus, type PolicyCheckRequest } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import type { KernelAnswer } from './harness';
import { startRunnerRig, type RunnerRig } from './rig';

const TOPIC = 'job.retry.due';
const THROTTLED = 'job.retry.throttled';
let setup: RunnerRig | undefined;
/** Checks of THROTTLED jobs answered THROTTLE 50 ms, the first four. */
let throttles = 0;

beforeAll(async () => {
  setup = await startRunnerRig({
    policy: (req: PolicyCheckRequest): KernelAnswer => {
      if (req.topic === THROTTLED && throttles < 4) {
        throttles += 1;
        return { decision: Decision.THROTTLE, ruleId: 'fast-window', reason: 'over', policySnapshot: 's', retryAfterMs: 50n };
      }
      return { decision: Decision.ALLOW, ruleId: 'allow', reason: 'ok', policySnapshot: 's' };
    },
    instanceId: 'sched-retry-due',
    env: { SCHEDULER_REPLAY_INTERVAL: '200ms' },
    workerId: 'tw-retry-due',
    topic: TOPIC,
  });
}, 60_000);

afterAll(async () => {
  await setup?.stop();
});

it('a submit that reaches a RETRYING job before its retry is due is acked: the next attempt goes when job:retry says', async () => {
  const { rig, worker } = setup!;
  const job = await rig.submit(`due-${process.pid}`, TOPIC);
  const first = await waitFor(() => worker.executions.get(job.id)?.[0], 10_000, { message: 'attempt 1' });
  await worker.reply(first.request, JobStatus.FAILED_RETRYABLE);
  await waitFor(async () => (await rig.job(job.id)).state === 'RETRYING', 5_000, { message: 'RETRYING' });
  // A later attempt's backoff (D13, up to 36 s): due 30 s from now.
  const dueAt = Date.now() + 30_000;
  await rig.redis.zadd(jobKeys.retry(), dueAt, job.id);
  const ignored = await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'submit', reason: 'retry_not_due' });
  // The submit comes again (a lost ack, redelivered; another msg id only to pass JetStream's duplicate window).
  await rig.publishSubmit(await rig.job(job.id), 7);
  await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'submit', reason: 'retry_not_due' })) === ignored + 1, 10_000, { message: 'submit acked, retry not due' });
  // Before: attempt 2 reached the worker 8 ms after the failure.
  expect(worker.count(job.id)).toBe(1);
  expect(Number(await rig.redis.zscore(jobKeys.retry(), job.id))).toBe(dueAt);
  // Once due, the replayer sends it.
  await rig.redis.zadd(jobKeys.retry(), Date.now(), job.id);
  await waitFor(() => worker.count(job.id) === 2, 10_000, { message: 'attempt 2 once due' });
});

it('a THROTTLE of 50 ms waits about that long per delivery, not the lock-busy schedule', async () => {
  const { rig, kernel } = setup!;
  const job = await rig.submit(`thr-${process.pid}`, THROTTLED);
  await waitFor(() => kernel.checks.filter((c) => c.jobId === job.id).length === 5, 15_000, { message: 'four THROTTLEs, then ALLOW' });
  const at = kernel.checks.map((c, i) => ({ c, at: kernel.checkedAt[i]! })).filter((x) => x.c.jobId === job.id).map((x) => x.at);
  // Before: the busy schedule (0.1, 0.5, 1, 2 s); the fourth wait was 2 s.
  const waits = at.slice(1).map((t, i) => t - at[i]!);
  expect(Math.max(...waits)).toBeLessThan(1_500);
});
