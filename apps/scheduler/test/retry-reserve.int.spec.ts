// P228 (c): a due retry reserves its worker's slot (P224) only once its policy re-check (P131) has
// let it go, not across that Check. Before, the slot of a worker with max_parallel_jobs 1 counted
// as busy for the whole Check (up to its 2 s deadline), so a new job that could run at once was
// held back as backpressure. In process against real Redis + NATS; the kernel holds the retry's
// Check for up to 1.8 s (under the Check deadline); the worker heartbeats 0 running, so only the
// scheduler's own reservation could hold the new job back. Executions are counted on the worker.
import { Decision, JobStatus, type PolicyCheckRequest } from '@cordum/protocol';
import { Latch, waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.retry-reserve';
const allow: KernelAnswer = { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-1' };
const A = `retry-reserve-a-${process.pid}`;
const B = `retry-reserve-b-${process.pid}`;

describe('a retry whose policy re-check is slow (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  const retryCheckSeen = new Latch();
  const bSent = new Latch();
  let retryAnsweredAt = 0;

  beforeAll(async () => {
    let checksOfA = 0;
    kernel = await startTestKernel(async (req: PolicyCheckRequest) => {
      if (req.jobId === A && ++checksOfA === 2) {
        // The retry's re-check: answered once B reached the worker, or after 8 s at most (the
        // scheduler's Check deadline is 10 s here; with 2 s and 1.8 s, B's submit, Check and
        // dispatch on a loaded box could come after the fallback answer though the slot was free).
        retryCheckSeen.open();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([bSent.promise, new Promise((r) => (timer = setTimeout(r, 8_000)))]);
        clearTimeout(timer);
        retryAnsweredAt = Date.now();
      }
      return allow;
    });
    rig = await startSchedulerRig({ instanceId: 'sched-retry-reserve', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '200ms' }, config: { safetyDeadlineMs: 10_000 } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-one-slot', topics: [TOPIC], replyFor: () => 'none', maxParallelJobs: 1 });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-one-slot' && v.readyTopics.includes(TOPIC)), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    bSent.open();
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('leaves the one slot free during the Check, so a new job runs at once, and each job runs exactly as often as it should', async () => {
    await rig.submit(A, TOPIC);
    const first = await waitFor(() => worker.executions.get(A)?.[0], 10_000, { message: 'A attempt 1 on the worker' });
    await worker.reply(first.request, JobStatus.FAILED_RETRYABLE);
    await retryCheckSeen.wait(15_000);
    await rig.submit(B, TOPIC);
    const b = await waitFor(() => worker.executions.get(B)?.[0], 7_000, { message: 'B on the worker' });
    bSent.open();
    // B reached the worker while A's re-check was still unanswered (before: held back until after it).
    await waitFor(() => retryAnsweredAt > 0, 10_000, { message: "A's re-check answered" });
    expect(b.at).toBeLessThan(retryAnsweredAt);
    await worker.reply(b.request, JobStatus.SUCCEEDED);
    const second = await waitFor(() => worker.executions.get(A)?.[1], 15_000, { message: 'A attempt 2 on the worker' });
    await worker.reply(second.request, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.job(A)).state === 'SUCCEEDED' && (await rig.job(B)).state === 'SUCCEEDED', 10_000, { message: 'both SUCCEEDED' });
    expect(worker.count(A)).toBe(2);
    expect(worker.count(B)).toBe(1);
  }, 60_000);
});
