// P139: past a job's deadline_ms no new attempt goes out (D46), whichever path would send it:
// the result handler's retry, the replayer's drive of a due retry, and the delivery verifier's
// replacement of an attempt that never started. Before, only a PENDING job was checked (P64),
// and a retry after the deadline ran the job again until the reconciler's next scan.
// Real Redis + NATS; the reconciler's scan is set 10 minutes apart, so every end here is the
// path under test's, not the deadline pass's. Executions are counted on the workers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decision, JobStatus, type PolicyCheckRequest } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { jobKeys, type JobRecord } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { createLogger } from '@cordum/service-kit';
import { startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startRunnerRig, type RunnerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.deadline.retry';
const SILENT_TOPIC = 'job.deadline.silent';
const tmp = mkdtempSync(join(tmpdir(), 'sched-deadline-'));
let setup: RunnerRig | undefined;
let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;
let silent: TestWorker | undefined;
let seq = 0;
/** job id → the answers of its next Checks, in order; ALLOW once they run out. */
const answers = new Map<string, KernelAnswer[]>();
const allow: KernelAnswer = { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-1' };
/** The scheduler's log lines (info and up). */
const logs: string[] = [];

beforeAll(async () => {
  const timeouts = join(tmp, 'timeouts.yaml');
  writeFileSync(timeouts, 'reconciler:\n  scan_interval_seconds: 600\n');
  setup = await startRunnerRig({
    policy: (req: PolicyCheckRequest) => answers.get(req.jobId)?.shift() ?? allow,
    instanceId: 'sched-deadline-retry',
    env: { SCHEDULER_REPLAY_INTERVAL: '200ms', SCHEDULER_DISPATCH_VERIFY_DELAY: '3s', TIMEOUT_CONFIG_PATH: timeouts },
    workerId: 'tw-deadline',
    topic: TOPIC,
    logger: createLogger({ service: 'scheduler', instance: 'sched-deadline-retry', level: 'info', write: (l) => void logs.push(l) }),
  });
  ({ rig, kernel, worker } = setup);
  // A worker that takes its dispatches and says nothing: no start ack, no claim (D1 b).
  silent = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-deadline-silent', topics: [SILENT_TOPIC], replyFor: () => 'silent' });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-deadline-silent' && v.readyTopics.length > 0), 10_000, { message: 'silent worker registered' });
}, 60_000);

afterAll(async () => {
  await silent?.stop();
  await setup?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** A job with `deadlineMs`, submitted as the gateway does. */
async function submit(topic: string, deadlineMs: number): Promise<JobRecord> {
  seq += 1;
  const id = `dl-${process.pid}-${seq}`;
  const job = await rig.store.createJob({ id, tenant: 'acme', topic, traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING', deadlineMs });
  await rig.publishSubmit(job);
  return job;
}

const checksOf = (id: string): number => kernel.checks.filter((c) => c.jobId === id).length;

describe('P139 no attempt past deadline_ms', () => {
  it('a retryable result after the deadline ends the job FAILED deadline_exceeded, with its DLQ entry: one execution', async () => {
    const job = await submit(TOPIC, 1_500);
    await waitFor(() => worker.count(job.id) === 1, 10_000, { message: 'first attempt on the worker' });
    await waitFor(() => Date.now() > job.deadlineAt!, 5_000, { message: 'the deadline passed' });
    await worker.reply(worker.executions.get(job.id)![0]!.request, JobStatus.FAILED_RETRYABLE);
    await waitFor(async () => (await rig.job(job.id)).state === 'FAILED', 10_000, { message: 'FAILED' });
    const done = await rig.job(job.id);
    expect(done.error?.code).toBe('deadline_exceeded');
    expect(done.error?.message).toMatch(/^deadline_ms passed; no attempt after attempt 1: /);
    expect(await waitFor(() => rig.store.getDlq(job.id), 5_000, { message: 'DLQ entry' })).toMatchObject({ reason_code: 'deadline_exceeded' });
    // Without the check the retry went out at once, 0.5 s or more past the deadline.
    expect(worker.count(job.id)).toBe(1);
  });

  it('a due retry the replayer drives after the deadline ends FAILED deadline_exceeded without asking the kernel: one execution', async () => {
    const job = await submit(TOPIC, 2_000);
    // The admission is allowed; the retry's Check is throttled for 3 s, so the retry is due after the deadline.
    answers.set(job.id, [allow, { decision: Decision.THROTTLE, reason: 'slow down', ruleId: 'rate', policySnapshot: 'snap-1', retryAfterMs: 3_000n }]);
    await waitFor(() => worker.count(job.id) === 1, 10_000, { message: 'first attempt on the worker' });
    await worker.reply(worker.executions.get(job.id)![0]!.request, JobStatus.FAILED_RETRYABLE);
    await waitFor(async () => (await rig.job(job.id)).state === 'RETRYING', 10_000, { message: 'RETRYING, its retry throttled' });
    expect(Date.now()).toBeLessThan(job.deadlineAt!);
    await waitFor(async () => (await rig.job(job.id)).state === 'FAILED', 10_000, { message: 'FAILED' });
    expect((await rig.job(job.id)).error).toEqual({ code: 'deadline_exceeded', message: 'deadline_ms passed before the next attempt' });
    expect(worker.count(job.id)).toBe(1);
    expect(checksOf(job.id)).toBe(2); // the admission and the throttled retry; the drive asked nothing
  });

  // P325: publishAttempt had no deadline check, so these three paths sent such an attempt past
  // the deadline (the worker ran it, and the job could end SUCCEEDED).
  it.each(['the redelivered submit', "the replayer's drive of its retry entry"])('an attempt recorded but never published is not sent after the deadline by %s: no execution', async (via) => {
    seq += 1;
    const id = `dl-${process.pid}-${seq}`;
    const job = await rig.store.createJob({ id, tenant: 'acme', topic: TOPIC, traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING', deadlineMs: 1_000 });
    // As a scheduler killed between its DISPATCHED write and its publish leaves it (D2).
    const lease = await createLocks(rig.redis).acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'dead-scheduler', waitMs: 2_000 });
    const w = await rig.store.transition(id, 'DISPATCHED', { token: lease!.token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch: { dispatchId: `d-${id}`, attempt: 1, published: false, subject: TOPIC }, attempts: 1, dispatchedAt: Date.now() } });
    await lease!.release();
    expect(w.ok).toBe(true);
    await waitFor(() => Date.now() > job.deadlineAt!, 5_000, { message: 'the deadline passed' });
    if (via === 'the redelivered submit') await rig.publishSubmit(job);
    else await rig.store.scheduleRetry(id, Date.now()); // P83: a publish that failed files one
    await waitFor(() => logs.some((l) => l.includes('attempt not sent: the job is past its deadline_ms') && l.includes(id)), 10_000, { message: 'the attempt was looked at and not sent' });
    expect(worker.count(id)).toBe(0);
    // The reconciler's deadline pass ends it TIMEOUT (D46); its scan is 10 minutes off here.
    expect((await rig.job(id)).state).toBe('DISPATCHED');
  });

  it('an attempt that never started is not replaced after the deadline: the verifier leaves it (unverified), one delivery', async () => {
    const before = await rig.counter('cordum_dispatch_verify_total', { outcome: 'unverified' });
    const job = await submit(SILENT_TOPIC, 1_500);
    await waitFor(() => silent!.count(job.id) === 1, 10_000, { message: 'dispatched to the silent worker' });
    // The verify delay (3 s) ends after the deadline (1.5 s): no claim, and no replacement either.
    await waitFor(async () => (await rig.counter('cordum_dispatch_verify_total', { outcome: 'unverified' })) === before + 1, 10_000, { message: 'verifier: unverified' });
    expect(silent!.count(job.id)).toBe(1);
    expect((await rig.job(job.id)).state).toBe('DISPATCHED'); // the reconciler's deadline pass ends it TIMEOUT (D46)
  });
});
