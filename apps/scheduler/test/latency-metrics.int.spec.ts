// P141: the latency histograms count from when a job was ready to go. The dispatch latency is
// observed for a job's first attempt only (a retry's time since creation holds the earlier
// attempt and its backoff), and both it and the intake wait count a held job from its approval,
// not from its creation (a long hold is not dispatch latency). Real Redis + NATS, in process.
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const HOLD_MS = 3_000;
const hold: KernelAnswer = { decision: Decision.REQUIRE_HUMAN, reason: 'needs a human', ruleId: 'hold-prod', policySnapshot: 'snap-1', approvalRequired: true };
const allow: KernelAnswer = { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-1' };

let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;

beforeAll(async () => {
  kernel = await startTestKernel((req) => (req.topic === 'job.lat.held' ? hold : allow));
  rig = await startSchedulerRig({ instanceId: 'sched-latency', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '200ms' } });
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-latency', topics: ['job.lat', 'job.lat.held'], replyFor: (topic) => (topic === 'job.lat' ? 'retry-once' : 'succeed') });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-latency' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

const hist = (name: string) => rig.histogram(name);

it('a job retried once is one dispatch latency sample, not one per attempt', async () => {
  const before = await hist('cordum_scheduler_dispatch_latency_seconds');
  const job = await rig.submit(`lat-retry-${process.pid}`, 'job.lat');
  await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 15_000, { message: 'SUCCEEDED on attempt 2' });
  expect(worker.count(job.id)).toBe(2);
  expect((await hist('cordum_scheduler_dispatch_latency_seconds')).count).toBe(before.count + 1);
});

it(`a job held ${HOLD_MS / 1000} s is counted from its approval in the intake wait and the dispatch latency`, async () => {
  const latency = await hist('cordum_scheduler_dispatch_latency_seconds');
  const intake = await hist('cordum_scheduler_intake_wait_seconds');
  const job = await rig.submit(`lat-held-${process.pid}`, 'job.lat.held');
  await waitFor(async () => (await rig.job(job.id)).state === 'APPROVAL_REQUIRED', 10_000, { message: 'held' });
  await waitFor(() => Date.now() >= job.createdAt + HOLD_MS, HOLD_MS + 5_000, { message: 'the hold lasted' });
  const held = await rig.job(job.id);
  await rig.approve(held, { status: 'approved', by: 'bob', at: Date.now(), jobHash: held.holdHash ?? '', policySnapshot: 'snap-1', ruleId: 'hold-prod', revision: 1 });
  await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED' });
  const latencyAfter = await hist('cordum_scheduler_dispatch_latency_seconds');
  const intakeAfter = await hist('cordum_scheduler_intake_wait_seconds');
  // Two intake samples (the submit, the approval's republish) and one dispatch: none holds the hold.
  expect(intakeAfter.count).toBe(intake.count + 2);
  expect(intakeAfter.sum - intake.sum).toBeLessThan(HOLD_MS / 1000);
  expect(latencyAfter.count).toBe(latency.count + 1);
  expect(latencyAfter.sum - latency.sum).toBeLessThan(HOLD_MS / 1000);
});
