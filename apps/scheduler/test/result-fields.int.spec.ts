// P267: a job's last answer is its answer. A job whose attempt 1 failed retryably with output and
// an error, then SUCCEEDED on attempt 2 without output, kept attempt 1's result_ptr and error: GET
// showed a SUCCEEDED job with the failed attempt's output and error. Real Redis + NATS, in process;
// the results are published as a CAP worker would. A final result goes through the lock-free finish
// (finish-2.lua); a retryable one that uses up the attempts goes through the locked transition.
import { subjects } from '@cordum/bus';
import { create, Decision, encodePacket, JobResultSchema, JobStatus, newPacket, type JobRequest } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;

beforeAll(async () => {
  kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
  rig = await startSchedulerRig({ instanceId: 'sched-result-fields', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '200ms' }, config: { maxAttempts: 2 } });
  // Answers nothing itself: the test publishes each attempt's result.
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-fields', topics: ['job.fields'], replyFor: () => 'none' });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-fields' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

function request(jobId: string, n: number): JobRequest {
  const req = worker.executions.get(jobId)?.[n - 1]?.request;
  if (!req) throw new Error(`no dispatch ${n} of ${jobId}`);
  return req;
}

async function answer(req: JobRequest, status: JobStatus, fields: { resultPtr?: string; errorCode?: string; errorMessage?: string }): Promise<void> {
  const result = create(JobResultSchema, { jobId: req.jobId, status, workerId: 'tw-fields', dispatch: { dispatchId: req.dispatch?.dispatchId ?? '', attempt: req.dispatch?.attempt ?? 0n, assignedWorkerId: 'tw-fields' }, ...fields });
  await rig.bus.publish(subjects.result, encodePacket(newPacket('tw-fields', { case: 'jobResult', value: result })), { msgId: `fields:${req.jobId}:${req.dispatch?.dispatchId ?? ''}` });
}

async function failThenAnswer(id: string, last: JobStatus, lastFields: { resultPtr?: string; errorCode?: string }) {
  const job = await rig.submit(`${id}-${process.pid}`, 'job.fields');
  await waitFor(() => worker.count(job.id) === 1, 10_000, { message: 'attempt 1 dispatched' });
  await rig.redis.set(`res:${job.id}`, JSON.stringify({ partial: 'attempt 1' }));
  await answer(request(job.id, 1), JobStatus.FAILED_RETRYABLE, { resultPtr: `redis://res:${job.id}`, errorCode: 'flaky_tool', errorMessage: 'the tool timed out' });
  await waitFor(async () => (await rig.job(job.id)).state === 'RETRYING', 10_000, { message: 'RETRYING after attempt 1' });
  expect(await rig.job(job.id)).toMatchObject({ resultPtr: `redis://res:${job.id}`, error: { code: 'flaky_tool' } });
  // The retry waits its backoff (about 1 s) and goes through the replayer.
  await waitFor(() => worker.count(job.id) === 2, 15_000, { message: 'attempt 2 dispatched' });
  await answer(request(job.id, 2), last, lastFields);
  await waitFor(async () => (await rig.job(job.id)).state === (last === JobStatus.SUCCEEDED ? 'SUCCEEDED' : 'FAILED'), 10_000, { message: 'attempt 2 applied' });
  return rig.job(job.id);
}

it('a job that SUCCEEDED on attempt 2 without output has neither attempt 1 output nor its error', async () => {
  const job = await failThenAnswer('fields-ok', JobStatus.SUCCEEDED, {});
  expect(job.resultPtr).toBeUndefined();
  expect(job.error).toBeUndefined();
  expect(job).toMatchObject({ state: 'SUCCEEDED', attempts: 2 });
});

it('a job that FAILED on attempt 2 without output keeps its own error and not attempt 1 output', async () => {
  const job = await failThenAnswer('fields-failed', JobStatus.FAILED, { errorCode: 'bad_input' });
  expect(job.resultPtr).toBeUndefined();
  expect(job.error).toMatchObject({ code: 'bad_input' });
});

it('a job that SUCCEEDED on attempt 2 with output shows that output', async () => {
  const job = await failThenAnswer('fields-out', JobStatus.SUCCEEDED, { resultPtr: 'redis://res:attempt-2-output' });
  expect(job.resultPtr).toBe('redis://res:attempt-2-output');
  expect(job.error).toBeUndefined();
});

it('a job whose attempt 2 fails retryably without output, its last attempt, ends FAILED max_attempts without attempt 1 output (the locked path)', async () => {
  const job = await failThenAnswer('fields-exhausted', JobStatus.FAILED_RETRYABLE, { errorCode: 'flaky_tool' });
  expect(job.resultPtr).toBeUndefined();
  expect(job.error).toMatchObject({ code: 'max_attempts' });
});
