// A retry the policy stops (P131) from the replayer leader's drive ends its job FAILED, and the
// concurrency slot it held (P70) goes to its group's next waiter at once, as it does after a
// result ends a job; before, the waiter went at the leader's next turn. The replay
// interval here is long (3 s) so that the two are told apart. Real Redis + NATS, an in-test
// kernel, a test worker that answers when the test tells it to; executions counted on the worker.
import { Decision, JobStatus, type PolicyCheckRequest } from '@cordum/protocol';
import { jobKeys } from '@cordum/job-store';
import { waitFor } from '@cordum/testing';
import { lastCheckAt, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startRunnerRig, type RunnerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.retry.slot';
const REPLAY_INTERVAL_MS = 3_000;
const oneAtATime: KernelAnswer = { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'one-slot', policySnapshot: 'snap-1', constraints: { maxConcurrentJobs: 1 } };

let setup: RunnerRig | undefined;
let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;
/** job id → the answer its next Checks get; oneAtATime when unset. */
const answers = new Map<string, KernelAnswer>();

beforeAll(async () => {
  // The worker reports RUNNING and answers only when the test replies.
  setup = await startRunnerRig({ policy: (req: PolicyCheckRequest) => answers.get(req.jobId) ?? oneAtATime, instanceId: 'sched-retry-slot', env: { SCHEDULER_REPLAY_INTERVAL: `${REPLAY_INTERVAL_MS}ms` }, workerId: 'tw-retry-slot', topic: TOPIC });
  ({ rig, kernel, worker } = setup);
}, 60_000);

afterAll(async () => {
  await setup?.stop();
});

const checksOf = (id: string): number => kernel.checks.filter((c) => c.jobId === id).length;

it('a retry stopped from the replayer\'s drive hands its slot to the waiting job at once', async () => {
  const a = await rig.submit(`slot-a-${process.pid}`, TOPIC);
  await waitFor(() => worker.count(a.id) === 1, 10_000, { message: 'A on the worker' });
  const b = await rig.submit(`slot-b-${process.pid}`, TOPIC);
  const group = (await rig.job(a.id)).concurrency?.group;
  expect(group).toBeDefined();
  await waitFor(async () => (await rig.store.slotWaiters(group!, 10)).includes(b.id), 10_000, { message: 'B waits for the slot' });

  // A's retry (sent by the replayer's drive after its backoff, P140) is throttled at its first
  // Check, then denied at the next drive.
  const handOffs = await rig.counter('cordum_scheduler_slot_hand_offs_total');
  answers.set(a.id, { decision: Decision.THROTTLE, reason: 'slow down', ruleId: 'rate', policySnapshot: 'snap-1' });
  await worker.reply(worker.executions.get(a.id)![0]!.request, JobStatus.FAILED_RETRYABLE);
  await waitFor(() => checksOf(a.id) >= 2, 10_000, { message: 'the retry throttled' });
  answers.set(a.id, { decision: Decision.DENY, reason: 'topic frozen', ruleId: 'freeze', policySnapshot: 'snap-2' });
  // The throttled drive has ended once it files A's next look, past the Check it made (the entry
  // its backoff filed is due before that Check).
  const throttledAt = lastCheckAt(kernel, a.id);
  await waitFor(async () => Number((await rig.redis.zscore(jobKeys.retry(), a.id)) ?? 0) >= throttledAt, 5_000, { message: 'the throttled retry filed again' });
  expect((await rig.job(a.id)).state).toBe('RETRYING');
  expect(worker.count(b.id)).toBe(0); // A's slot is still A's while it may retry

  await waitFor(async () => (await rig.job(a.id)).state === 'FAILED', 2 * REPLAY_INTERVAL_MS + 5_000, { message: 'A FAILED from the replayer\'s drive' });
  const failed = await rig.job(a.id);
  expect(failed.error?.code).toBe('policy_denied');
  await waitFor(() => worker.count(b.id) === 1, 2 * REPLAY_INTERVAL_MS + 5_000, { message: 'B on the worker' });
  const started = await rig.job(b.id);
  // After A's end (its slot was A's until then), and at once by A's end handing its slot off, not
  // at the leader's next turn: counted by the hand-off (a bound on the time between them told the
  // two apart only by the replayer's phase, and a loaded machine could exceed it).
  expect(started.dispatchedAt!).toBeGreaterThanOrEqual(failed.finishedAt!);
  await waitFor(async () => (await rig.counter('cordum_scheduler_slot_hand_offs_total')) > handOffs, 5_000, { message: 'the hand-off counted' });
  expect(await rig.counter('cordum_scheduler_slot_hand_offs_total')).toBe(handOffs + 1);
  expect(worker.count(a.id)).toBe(1);
}, 60_000);
