// P131: a RETRYING job's next attempt goes only with the policy's say-so. Real Redis + NATS, an
// in-test kernel whose answer for a job can change between its first Check and its retry, and a
// test worker that answers when the test tells it to. Executions are counted on the worker.
import { Decision, JobStatus, type PolicyCheckRequest } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { jobKeys, type JobRecord } from '@cordum/job-store';
import { lastCheckAt, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startRunnerRig, type RunnerRig, type SchedulerRig } from './rig';

let setup: RunnerRig | undefined;
let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;
let seq = 0;
/** job id → the answer its next Checks get; ALLOW when unset. */
const answers = new Map<string, KernelAnswer>();
const allow: KernelAnswer = { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-1' };

beforeAll(async () => {
  // The worker reports RUNNING and answers only when the test replies.
  setup = await startRunnerRig({ policy: (req: PolicyCheckRequest) => answers.get(req.jobId) ?? allow, instanceId: 'sched-retry-check', env: { SCHEDULER_REPLAY_INTERVAL: '200ms' }, workerId: 'tw-retry-check', topic: 'job.retry.check' });
  ({ rig, kernel, worker } = setup);
}, 60_000);

afterAll(async () => {
  await setup?.stop();
});

const checksOf = (id: string): number => kernel.checks.filter((c) => c.jobId === id).length;

/** A job whose first attempt has started on the worker. */
async function running(): Promise<JobRecord> {
  seq += 1;
  const job = await rig.submit(`rc-${process.pid}-${seq}`, 'job.retry.check');
  await waitFor(() => worker.count(job.id) === 1, 10_000, { message: 'first attempt on the worker' });
  return job;
}

/** The worker's answer to attempt `n` (1-based). */
async function answer(job: JobRecord, n: number, status: JobStatus): Promise<void> {
  await worker.reply(worker.executions.get(job.id)![n - 1]!.request, status);
}

describe('P131 Check before a retry', () => {
  it('a retry the policy allows goes out as the next attempt, after a second Check', async () => {
    const job = await running();
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    await waitFor(() => worker.count(job.id) === 2, 10_000, { message: 'second attempt' });
    expect(checksOf(job.id)).toBe(2);
    await answer(job, 2, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED' });
    // The retry's decision is in the job's decision history, beside the admission's.
    expect((await rig.store.listDecisions(job.id)).map((d) => [d.state, d.decision, d.rule_id])).toEqual([
      ['SCHEDULED', 'allow', 'allow-all'],
      ['DISPATCHED', 'allow', 'allow-all'],
    ]);
  });

  it('a deny added after admission stops the retry: FAILED policy_denied + DLQ, one execution', async () => {
    const job = await running();
    const stopped = await rig.counter('cordum_scheduler_retries_stopped_total', { decision: 'deny' });
    answers.set(job.id, { decision: Decision.DENY, reason: 'topic frozen', ruleId: 'freeze', policySnapshot: 'snap-2' });
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    await waitFor(async () => (await rig.job(job.id)).state === 'FAILED', 10_000, { message: 'FAILED' });
    const done = await rig.job(job.id);
    expect(done.error).toEqual({ code: 'policy_denied', message: 'retry of attempt 1 denied (policy rule freeze): topic frozen' });
    expect(done.safety).toEqual({ decision: 'deny', reason: 'topic frozen', ruleId: 'freeze', policySnapshot: 'snap-2' });
    expect((await rig.store.listDecisions(job.id)).map((d) => [d.state, d.decision])).toEqual([['SCHEDULED', 'allow'], ['FAILED', 'deny']]);
    expect(await waitFor(() => rig.store.getDlq(job.id), 5_000, { message: 'DLQ entry' })).toMatchObject({ reason_code: 'policy_denied' });
    // Counted once the write's reply is back, which can be a moment after another client sees it.
    await waitFor(async () => (await rig.counter('cordum_scheduler_retries_stopped_total', { decision: 'deny' })) === stopped + 1, 5_000, { message: 'counted' });
    // Without the re-check the retry went out at once (and, never answered, the job never ended).
    expect(worker.count(job.id)).toBe(1);
  });

  it('a hold the job has no approval for stops the retry: FAILED approval_required', async () => {
    const job = await running();
    answers.set(job.id, { decision: Decision.REQUIRE_HUMAN, reason: 'prod needs a human', ruleId: 'hold-prod', policySnapshot: 'snap-2', approvalRequired: true });
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    await waitFor(async () => (await rig.job(job.id)).state === 'FAILED', 10_000, { message: 'FAILED' });
    expect((await rig.job(job.id)).error?.code).toBe('approval_required');
    expect(worker.count(job.id)).toBe(1);
    await waitFor(async () => (await rig.counter('cordum_scheduler_retries_stopped_total', { decision: 'require_human' })) === 1, 5_000, { message: 'counted' });
  });

  it('a throttled retry waits in RETRYING and goes once the kernel allows it', async () => {
    const job = await running();
    answers.set(job.id, { decision: Decision.THROTTLE, reason: 'slow down', ruleId: 'rate', policySnapshot: 'snap-1' });
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    // Asked again at the re-filed due time (retry_after_ms 0 → 100 ms), still not sent.
    await waitFor(() => checksOf(job.id) >= 4, 10_000, { message: 'the throttled retry asked again' });
    expect((await rig.job(job.id)).state).toBe('RETRYING');
    expect(worker.count(job.id)).toBe(1);
    answers.delete(job.id);
    await waitFor(() => worker.count(job.id) === 2, 10_000, { message: 'second attempt once allowed' });
    await answer(job, 2, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED' });
  });

  it('a retry the kernel throttles and then denies ends FAILED from the replayer\'s drive', async () => {
    const job = await running();
    answers.set(job.id, { decision: Decision.THROTTLE, reason: 'slow down', ruleId: 'rate', policySnapshot: 'snap-1' });
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    await waitFor(() => checksOf(job.id) >= 3, 10_000, { message: 'the throttled retry asked again' });
    answers.set(job.id, { decision: Decision.DENY, reason: 'topic frozen', ruleId: 'freeze', policySnapshot: 'snap-2' });
    await waitFor(async () => (await rig.job(job.id)).state === 'FAILED', 10_000, { message: 'FAILED' });
    expect((await rig.job(job.id)).error?.code).toBe('policy_denied');
    expect(worker.count(job.id)).toBe(1);
  });

  it('a job a human approved is retried under its approval (D18): the hold does not stop it', async () => {
    seq += 1;
    const id = `rc-${process.pid}-${seq}`;
    const hold: KernelAnswer = { decision: Decision.REQUIRE_HUMAN, reason: 'prod needs a human', ruleId: 'hold-prod', policySnapshot: 'snap-1', approvalRequired: true };
    answers.set(id, hold);
    const job = await rig.submit(id, 'job.retry.check');
    await waitFor(async () => (await rig.job(id)).state === 'APPROVAL_REQUIRED', 10_000, { message: 'held' });
    const held = await rig.job(id);
    await rig.approve(held, { status: 'approved', by: 'bob', at: Date.now(), jobHash: held.holdHash ?? '', policySnapshot: 'snap-1', ruleId: 'hold-prod', revision: 1 });
    await waitFor(() => worker.count(id) === 1, 10_000, { message: 'approved job on the worker' });
    await answer(job, 1, JobStatus.FAILED_RETRYABLE);
    await waitFor(() => worker.count(id) === 2, 10_000, { message: 'retried under the approval' });
    expect(checksOf(id)).toBe(3);
    expect((await rig.job(id)).safety).toEqual({ decision: 'require_human', reason: 'approved by bob: prod needs a human', ruleId: 'hold-prod', policySnapshot: 'snap-1' });
    await answer(job, 2, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.job(id)).state === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED' });
  });

  it('with the kernel down the retry is held (input_fail_mode closed), then goes once it answers', async () => {
    const job = await running();
    kernel.failing = true;
    try {
      await answer(job, 1, JobStatus.FAILED_RETRYABLE);
      await waitFor(() => checksOf(job.id) >= 2, 10_000, { message: 'retry Check attempted' });
      // Held: once its next look is filed (after its last Check), it is 5 s past that Check. A
      // fail-open retry would have gone instead, and a hold as short as a busy lock's is 250 ms.
      const refiled = async (): Promise<number> => Number((await rig.redis.zscore(jobKeys.retry(), job.id)) ?? 0);
      await waitFor(async () => (await refiled()) > lastCheckAt(kernel, job.id), 5_000, { message: 'the retry filed again' });
      expect((await refiled()) - lastCheckAt(kernel, job.id)).toBeGreaterThanOrEqual(4_000);
      expect((await rig.job(job.id)).state).toBe('RETRYING');
      expect(worker.count(job.id)).toBe(1);
    } finally {
      kernel.failing = false;
    }
    // Asked again once the hold is over.
    await waitFor(() => worker.count(job.id) === 2, 15_000, { message: 'second attempt after the kernel came back' });
    await answer(job, 2, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED' });
  }, 30_000);
});
