// P15 parked jobs the replayer leader's turn cannot see, in process against real Redis + NATS:
// a job left in `job:parked:<topic>` whose topic is missing from `job:parked:topics` (what a
// leader's dropParkedTopicIfEmpty racing a park's out-of-order writes on a cluster left) is
// found by the orphan sweep and unparked once a worker serves its topic.
import { jobKeys, type NewJob } from '@cordum/job-store';
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('parked jobs outside the topic list (P15, in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  const topic = 'job.lostpark';

  beforeAll(async () => {
    kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
    rig = await startSchedulerRig({ instanceId: 'sched-parked', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '200ms', SCHEDULER_PENDING_REPLAY_AGE: '1s' } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-lostpark', topics: [topic], replyFor: () => 'succeed' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-lostpark' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('a job parked on a served topic that job:parked:topics lost is unparked by the orphan sweep and runs once', async () => {
    const j: NewJob = {
      id: `lostpark-${process.pid}`, tenant: 'acme', topic, traceId: 'trace-lostpark', priority: 'batch', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'PENDING',
    };
    const job = await rig.store.createJob(j);
    // The state a park leaves once its topic entry is gone: parked until its expiry, 10 minutes
    // on, and its topic unlisted. Its orphan clock is made old so the sweep reaches it now, as it
    // would past the expiry (parking moves the clock there). No submit is published: only the
    // sweep can find this job.
    await rig.redis.zadd(jobKeys.parked(topic), Date.now() + 600_000, job.id);
    await rig.redis.zadd(jobKeys.active('PENDING'), Date.now() - 600_000, job.id);
    expect(await rig.redis.sismember(jobKeys.parkedTopics(), topic)).toBe(0);
    await waitFor(async () => (await rig.store.getJob(job.id))?.state === 'SUCCEEDED', 10_000, { message: 'unparked by the orphan sweep and run' });
    expect(worker.count(job.id)).toBe(1);
    expect(await rig.redis.zscore(jobKeys.parked(topic), job.id)).toBeNull();
  });
});
