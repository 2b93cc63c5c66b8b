// P142: D13's no-worker bound (SCHEDULER_SCHEDULE_MAX_WAIT, here 3 s) applies to each wait for a
// worker, counted from the wait's first look, not from the job's creation. Before, a job approved
// after a hold longer than the bound, or retried after an attempt longer than it, failed
// `no_workers` at its first look that found no worker, without waiting at all. Real Redis + NATS,
// in process; executions are counted on the workers.
import type { JobRecord } from '@cordum/job-store';
import { Decision, JobStatus } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const MAX_WAIT_MS = 3_000;
const HELD = 'job.wait.held';
const RETRIED = 'job.wait.retried';
const hold: KernelAnswer = { decision: Decision.REQUIRE_HUMAN, reason: 'needs a human', ruleId: 'hold-wait', policySnapshot: 'snap-1', approvalRequired: true };
const allow: KernelAnswer = { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-1' };

let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;
const late: TestWorker[] = [];
const logs: string[] = [];

beforeAll(async () => {
  kernel = await startTestKernel((req) => (req.topic === HELD ? hold : allow));
  rig = await startSchedulerRig({ instanceId: 'sched-worker-wait', kernelAddress: kernel.address, logger: createLogger({ service: 'scheduler', instance: 'sched-worker-wait', level: 'warn', write: (l) => void logs.push(l) }), env: { SCHEDULER_REPLAY_INTERVAL: '200ms', SCHEDULER_SCHEDULE_MAX_WAIT: `${MAX_WAIT_MS}ms` } });
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-wait', topics: [RETRIED], replyFor: () => 'none' });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-wait' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  for (const w of late) await w.stop();
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

const draining = (on: boolean) => waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-wait' && (v.draining ?? false) === on), 5_000, { message: `worker draining=${on} seen` });
const stateOf = async (id: string) => (await rig.job(id)).state;

it(`a job approved after a hold longer than the bound waits for a worker instead of failing no_workers at once`, async () => {
  const job = await rig.submit(`wait-held-${process.pid}`, HELD);
  await waitFor(async () => (await stateOf(job.id)) === 'APPROVAL_REQUIRED', 10_000, { message: 'held' });
  await waitFor(() => Date.now() >= job.createdAt + MAX_WAIT_MS + 500, MAX_WAIT_MS + 5_000, { message: 'the hold outlasted the bound' });
  const held = await rig.job(job.id);
  await rig.approve(held, { status: 'approved', by: 'bob', at: Date.now(), jobHash: held.holdHash ?? '', policySnapshot: 'snap-1', ruleId: 'hold-wait', revision: 1 });
  // Nobody serves the topic: the job is parked for its own wait (before: FAILED no_workers, 0 tries).
  await waitFor(async () => (await rig.job(job.id)).workerWait?.tries === 1, 5_000, { message: 'first look of the wait counted' });
  const waiting = await rig.job(job.id);
  expect(waiting.state).toBe('PENDING');
  // P230: why it waits, for the API: nobody serves the topic.
  expect(waiting.workerWait?.reason).toBe('no_worker_for_topic');
  expect(waiting.workerWait?.lastTryAt).toBeGreaterThanOrEqual(waiting.workerWait?.since ?? Infinity);
  const w = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-wait-held', topics: [HELD], replyFor: () => 'succeed' });
  late.push(w);
  await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED once a worker came' });
  expect(w.count(job.id)).toBe(1);
});

/**
 * A job whose first attempt runs longer than the bound and then fails retryably while the only
 * worker drains: its retry's drive finds no worker that takes jobs and waits (before: FAILED
 * no_workers at once). Returns the job and when the failure was sent.
 */
async function retriedAfterLongAttempt(id: string): Promise<{ job: { id: string }; failedAt: number }> {
  const job = await rig.submit(id, RETRIED);
  const first = await waitFor(() => worker.executions.get(job.id)?.[0], 10_000, { message: 'attempt 1 on the worker' });
  await waitFor(() => Date.now() >= job.createdAt + MAX_WAIT_MS + 500, MAX_WAIT_MS + 5_000, { message: 'the attempt outlasted the bound' });
  worker.drain(true);
  await draining(true);
  const failedAt = Date.now();
  await worker.reply(first.request, JobStatus.FAILED_RETRYABLE);
  await waitFor(async () => (await rig.job(job.id)).workerWait?.tries === 1, 10_000, { message: 'first look of the retry wait counted' });
  const waiting = await rig.job(job.id);
  expect(waiting.state).toBe('RETRYING');
  // P230: the topic's only worker drains.
  expect(waiting.workerWait?.reason).toBe('workers_draining');
  return { job, failedAt };
}

it('a job retried after an attempt longer than the bound waits for a worker, and its wait is bounded from its own start', async () => {
  const { job, failedAt } = await retriedAfterLongAttempt(`wait-retried-${process.pid}`);
  // Nothing takes it: FAILED no_workers at the bound of this wait, which began after the failure.
  await waitFor(async () => (await stateOf(job.id)) === 'FAILED', MAX_WAIT_MS + 10_000, { message: 'FAILED no_workers at the bound' });
  expect(Date.now() - failedAt).toBeGreaterThanOrEqual(MAX_WAIT_MS);
  const end = await rig.job(job.id);
  expect(end.error?.code).toBe('no_workers');
  expect(end.workerWait?.since).toBeGreaterThanOrEqual(failedAt);
  expect(end.workerWait?.tries).toBeGreaterThanOrEqual(1);
  expect(worker.count(job.id)).toBe(1);
  worker.drain(false);
  await draining(false);
});

it('a retry wait that a worker ends in time dispatches the next attempt, which runs once', async () => {
  const { job } = await retriedAfterLongAttempt(`wait-resumed-${process.pid}`);
  worker.drain(false);
  const second = await waitFor(() => worker.executions.get(job.id)?.[1], 10_000, { message: 'attempt 2 on the worker' });
  await worker.reply(second.request, JobStatus.SUCCEEDED);
  await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 5_000, { message: 'SUCCEEDED on attempt 2' });
  expect(worker.count(job.id)).toBe(2);
});

/**
 * Submits a job no worker will take and follows its wait to the `no_workers` failure: the reason
 * its first look records, the failure's message, and the failure in P255's counter for `counted`
 * (its pools and reason). The ended job, and the looks the waits counter counted meanwhile.
 */
async function waitsThenFails(id: string, topic: string, labels: Record<string, string>, counted: { pools: string; reason: string }, message: RegExp): Promise<{ end: JobRecord; looks: number }> {
  const waits = () => rig.counter('cordum_scheduler_worker_waits_total', counted);
  const failed = () => rig.counter('cordum_scheduler_no_workers_failed_total', counted);
  const [waitsBefore, failedBefore] = [await waits(), await failed()];
  const job = await rig.submit(id, topic, labels);
  await waitFor(async () => (await rig.job(job.id)).workerWait?.tries === 1, 10_000, { message: 'first look of the wait counted' });
  const waiting = await rig.job(job.id);
  expect(waiting.state).toBe('PENDING');
  expect(waiting.workerWait?.reason).toBe(counted.reason);
  await waitFor(async () => (await stateOf(job.id)) === 'FAILED', MAX_WAIT_MS + 10_000, { message: 'FAILED no_workers at the bound' });
  const end = await rig.job(job.id);
  expect(end.error?.code).toBe('no_workers');
  expect(end.error?.message).toMatch(message);
  expect(end.workerWait?.tries).toBeGreaterThan(0);
  // The scheduler counts the failure once its FAILED write has answered, which the test can see first.
  await waitFor(async () => (await failed()) > failedBefore, 5_000, { message: 'the failure counted' });
  expect(await failed()).toBe(failedBefore + 1);
  return { end, looks: (await waits()) - waitsBefore };
}

it('a job no serving worker can place says so while it waits (P230), and fails no_workers at the bound without running', async () => {
  await draining(false);
  // P254: the failure says why, not only that no worker came (the topic had one). P255: an
  // operator sees the waits and the failure by pool and reason (the topic maps to no pool).
  const { end, looks } = await waitsThenFails(`wait-placement-${process.pid}`, RETRIED, { 'placement.gpu': 'true' }, { pools: '', reason: 'no_matching_worker' }, /none met the job's requires or placement labels$/);
  expect(worker.count(end.id)).toBe(0);
  // Polled, not parked: every look was counted.
  expect(looks).toBe(end.workerWait?.tries);
});

it('a job on a topic mapped to a pool whose live workers listen on other topics says so, and fails no_workers naming the fix (P261)', async () => {
  // config/pools.yaml maps job.default to the pool default, whose live test workers name only
  // their own topics: P253 sends none of them the job.
  const { looks } = await waitsThenFails(`wait-unlistened-${process.pid}`, 'job.default', {}, { pools: 'default', reason: 'workers_not_listening' }, /workers of the topic's pools were live, but none listens on the topic/);
  // Parked after its first look: its failure counts the tries it would have made, not looks.
  expect(looks).toBeGreaterThan(0);
  // The operator is told which workers and what to do, once a minute per topic, not at every look.
  const warned = logs.filter((l) => l.includes('none listens on the topic') && l.includes('"topic":"job.default"'));
  expect(warned).toHaveLength(1);
  expect(warned[0]).toContain('"pools":"default"');
  expect(warned[0]).toContain('tw-wait');
});
