// P164: the replayer leader lists a topic's parked jobs past their bound, then expires each under
// its lock. A leader frozen between the two (a GC pause, SIGSTOP) may resume after its successor
// unparked a job (a worker came, or a drive re-filed it): expiring it then failed a job that was
// no longer waiting, `no_workers`, with a worker serving its topic. Now the entry is read again
// under the lock. In process against real Redis + NATS; the freeze is the scheduler's `wrapStore`
// seam: the listing returns only after "another leader" unparked the job.
import { jobKeys, type JobStore } from '@cordum/job-store';
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.stale-park';

let rig: SchedulerRig;
let kernel: TestKernel;
let target = '';
let rechecked = false;

const wrapStore = (s: JobStore): JobStore => ({
  ...s,
  async listParked(topic, maxScore, limit) {
    const listed = await s.listParked(topic, maxScore, limit);
    if (maxScore !== Infinity && listed.some((e) => e.id === target)) {
      // Meanwhile another leader re-drove it (re-filed in job:retry, here due in a minute).
      await s.unpark(topic, [target], Date.now() + 60_000);
    }
    return listed;
  },
  async parkedExpiry(topic, id) {
    const at = await s.parkedExpiry(topic, id);
    if (id === target) rechecked = true;
    return at;
  },
});

beforeAll(async () => {
  kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
  rig = await startSchedulerRig({
    instanceId: 'sched-parked-stale',
    kernelAddress: kernel.address,
    env: { SCHEDULER_REPLAY_INTERVAL: '200ms', SCHEDULER_SCHEDULE_MAX_WAIT: '1500ms' },
    deps: { wrapStore },
  });
}, 60_000);

afterAll(async () => {
  await rig?.stop();
  await kernel?.stop();
});

it('a parked job unparked by another leader after this one listed it is not failed no_workers', async () => {
  target = `stale-park-${process.pid}`;
  await rig.submit(target, TOPIC);
  await waitFor(async () => (await rig.redis.zscore(jobKeys.parked(TOPIC), target)) !== null, 10_000, { message: 'parked (nobody serves the topic)' });
  await waitFor(async () => rechecked || (await rig.job(target)).state === 'FAILED', 15_000, { message: 'the expiry turn reached the job' });
  const job = await rig.job(target);
  expect({ state: job.state, error: job.error?.code ?? null }).toEqual({ state: 'PENDING', error: null });
  expect(await rig.redis.zscore(jobKeys.retry(), target)).not.toBeNull();
}, 60_000);
