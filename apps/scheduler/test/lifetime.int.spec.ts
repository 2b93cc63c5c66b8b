// P244: a job that runs, or waits for a worker, longer than JOB_TTL keeps its record. A job's keys
// got the TTL at creation and nothing renewed them: a review (JOB_TTL=1m, 45 s jobs on a 1-slot
// worker) saw a running job's record expire before its result (ignored as `unknown_job`) and a
// job waiting behind it vanish without running. Here JOB_TTL is 1 min (the keeper runs every
// 7.5 s) and each job's keys are aged to 12 s left, as if created 48 s ago: both jobs outlive that
// and end SUCCEEDED, each run once (counted on the worker). In process against real Redis + NATS.
import { jobKeys } from '@cordum/job-store';
import { waitFor } from '@cordum/testing';
import { LIFETIME_LAST_RUN_KEY } from '../src/lifetime';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.lifetime.long';
const LEFT_MS = 12_000;
const RUN_MS = 20_000;

let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;

beforeAll(async () => {
  kernel = await startTestKernel([]);
  rig = await startSchedulerRig({
    instanceId: 'sched-lifetime',
    kernelAddress: kernel.address,
    env: { JOB_TTL: '1m' },
    // The keeper's last run a period ago: its first look (7.5 s in) runs, as on a running cluster.
    beforeStart: async (redis) => void (await redis.set(LIFETIME_LAST_RUN_KEY, String(Date.now() - 60_000))),
  });
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-one-slot', topics: [TOPIC], replyFor: () => 'succeed', maxParallelJobs: 1, runMs: RUN_MS });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-one-slot' && v.readyTopics.includes(TOPIC)), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

/** Ages every key of the job to LEFT_MS (the rig creates jobs with a 1 h TTL). */
async function age(id: string): Promise<void> {
  for (const k of [jobKeys.meta(id), jobKeys.fence(id), jobKeys.decisions(id), jobKeys.ctx(id)]) await rig.redis.pexpire(k, LEFT_MS);
}

it('a job running past its record\'s TTL, and one waiting behind it for the worker\'s one slot, keep their records and SUCCEED once each', async () => {
  const running = `life-run-${process.pid}`;
  const waiting = `life-wait-${process.pid}`;
  await rig.submit(running, TOPIC);
  await waitFor(async () => (await rig.job(running)).state === 'RUNNING', 10_000, { message: 'the first job RUNNING' });
  await rig.submit(waiting, TOPIC);
  await age(running);
  await age(waiting);
  // The first job's record would expire 12 s from now, 8 s before its result.
  const first = await waitFor(async () => ((await rig.job(running)).state === 'SUCCEEDED' ? rig.job(running) : null), RUN_MS + 10_000, { message: 'the running job SUCCEEDED', intervalMs: 500 });
  expect(first.attempts).toBe(1);
  await waitFor(async () => (await rig.job(waiting)).state === 'SUCCEEDED', RUN_MS + 15_000, { message: 'the waiting job SUCCEEDED', intervalMs: 500 });
  expect([worker.count(running), worker.count(waiting)]).toEqual([1, 1]);
  expect(await rig.counter('cordum_scheduler_job_lifetimes_renewed_total')).toBeGreaterThanOrEqual(2);
  expect(await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'result', reason: 'unknown_job' })).toBe(0);
}, 90_000);
