// P70 hand-off, in process against real Redis + NATS: a result that frees a concurrency slot
// drives the group's next waiter at once. The replayer leader's turn is 60 s apart here, so
// nothing else can have woken the waiters within the test.
import { subjects } from '@cordum/bus';
import { jobKeys, type JobRecord, type NewJob } from '@cordum/job-store';
import { create, Decision, encodePacket, JobRequestSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('slot hand-off (P70, in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  let seq = 0;

  beforeAll(async () => {
    kernel = await startTestKernel(() => ({ decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'one', policySnapshot: 'snap-test', constraints: { maxConcurrentJobs: 1 } }));
    rig = await startSchedulerRig({ instanceId: 'sched-slots', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '60s' } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-one', topics: ['job.one'], replyFor: () => 'none' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-one' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  async function submit(): Promise<JobRecord> {
    seq += 1;
    const j: NewJob = {
      id: `slot-${process.pid}-${seq}`, tenant: 'acme', topic: 'job.one', traceId: `trace-${seq}`, priority: 'batch', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'PENDING',
    };
    const job = await rig.store.createJob(j);
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${job.id}:0:0` });
    return job;
  }
  const counter = async (name: string): Promise<number> => (await rig.metrics.getSingleMetric(name)?.get())?.values.reduce((a, v) => a + v.value, 0) ?? 0;

  it('each result that frees the slot dispatches the longest waiter at once, without the leader', async () => {
    const group = 'acme/one';
    const jobs: JobRecord[] = [];
    for (let i = 0; i < 4; i += 1) jobs.push(await submit());
    await waitFor(async () => worker.executions.size === 1 && (await rig.redis.zcard(jobKeys.slotWaiters(group))) === 3, 10_000, { message: 'one out, three queued' });
    const queue = await rig.redis.zrange(jobKeys.slotWaiters(group), '0', '-1');
    let out = [...worker.executions.keys()][0] as string;
    for (const next of queue) {
      const req = worker.executions.get(out)?.[0]?.request;
      if (!req) throw new Error(`no dispatch of ${out}`);
      await worker.reply(req, JobStatus.SUCCEEDED);
      await waitFor(() => worker.count(next) === 1, 10_000, { message: `${next} handed the slot` });
      expect(worker.executions.size).toBe(queue.indexOf(next) + 2);
      out = next;
    }
    const last = worker.executions.get(out)?.[0]?.request;
    if (!last) throw new Error(`no dispatch of ${out}`);
    await worker.reply(last, JobStatus.SUCCEEDED);
    await waitFor(async () => (await Promise.all(jobs.map((j) => rig.store.getJob(j.id)))).every((j) => j?.state === 'SUCCEEDED'), 10_000, { message: 'all SUCCEEDED' });
    expect(await counter('cordum_scheduler_slot_hand_offs_total')).toBe(3);
    expect(await counter('cordum_scheduler_slot_wakes_total')).toBe(0);
    for (const j of jobs) expect(worker.count(j.id)).toBe(1);
  });
});
