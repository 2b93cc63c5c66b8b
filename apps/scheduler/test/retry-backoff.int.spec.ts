// P140: a retryable failure's next attempt waits the D13 backoff (1 s·2ⁿ, ±20 %) in job:retry and
// goes from the replayer's drive, instead of at once (BEHAVIOURS §1.5). Real Redis + NATS, a test
// worker that answers when the test tells it to; attempts are counted and timed on the worker.
// Only lower bounds are asserted (the backoff's floor), never how fast anything is.
import { jobKeys } from '@cordum/job-store';
import { JobStatus } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startRunnerRig, type RunnerRig } from './rig';

const TOPIC = 'job.retry.backoff';
let setup: RunnerRig | undefined;

beforeAll(async () => {
  setup = await startRunnerRig({ policy: [], instanceId: 'sched-retry-backoff', env: { SCHEDULER_REPLAY_INTERVAL: '200ms' }, workerId: 'tw-retry-backoff', topic: TOPIC });
}, 60_000);

afterAll(async () => {
  await setup?.stop();
});

it('a job failing retryably twice gets its second and third attempts no sooner than 0.8 s and 1.6 s after each failure, then succeeds', async () => {
  const { rig, worker } = setup!;
  const job = await rig.submit(`rb-${process.pid}`, TOPIC);
  const attempt = async (n: number) => waitFor(() => worker.executions.get(job.id)?.[n - 1], 10_000, { message: `attempt ${n} on the worker` });

  const first = await attempt(1);
  const failedAt1 = Date.now();
  await worker.reply(first.request, JobStatus.FAILED_RETRYABLE);
  await waitFor(async () => (await rig.job(job.id)).state === 'RETRYING', 5_000, { message: 'RETRYING' });
  expect(await rig.redis.zscore(jobKeys.retry(), job.id)).not.toBeNull(); // it waits in job:retry (D13)
  const second = await attempt(2);
  expect(second.at - failedAt1).toBeGreaterThanOrEqual(800); // 1 s ± 20 %

  const failedAt2 = Date.now();
  await worker.reply(second.request, JobStatus.FAILED_RETRYABLE);
  const third = await attempt(3);
  expect(third.at - failedAt2).toBeGreaterThanOrEqual(1_600); // 2 s ± 20 %

  await worker.reply(third.request, JobStatus.SUCCEEDED);
  await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 5_000, { message: 'SUCCEEDED' });
  expect(worker.count(job.id)).toBe(3);
  expect((await rig.job(job.id)).attempts).toBe(3);
});
