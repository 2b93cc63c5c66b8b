// D3 right before the publish: an attempt's max_runtime_ms bound (P65) is written, and awaited,
// between the lease check and the publish. A replica frozen in that write whose lock another
// replica took meanwhile must not publish the attempt when it wakes (the new owner republishes
// it, D2). In process against real Redis + NATS; the freeze is the scheduler's `wrapStore` seam
// holding the bound's write while the lock is taken over.
import { setTimeout as sleep } from 'node:timers/promises';
import { subjects } from '@cordum/bus';
import { jobKeys, type JobStore } from '@cordum/job-store';
import { create, Decision, encodePacket, JobRequestSchema, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const LOCK_TTL_MS = 3_000;

describe('dispatch: the lease is checked again right before the publish (D3, in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  /** The job whose next bound write is followed by a takeover of its lock, noticed by its holder. */
  let takeOver: { id: string; done: () => void } | undefined;
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async setDeadline(id, atMs) {
      await s.setDeadline(id, atMs);
      const t = takeOver;
      if (t && t.id === id) {
        takeOver = undefined;
        // Another replica holds the job's lock now (ours expired while we were "frozen").
        await rig.redis.set(jobKeys.lock(id), 'other-replica:999999', 'PX', 60_000);
        // "Frozen" a whole TTL: our lease is no longer safe to act on, by its own clock (D3) as
        // well as by its next renew (every TTL / 3), which finds the lock taken.
        await sleep(LOCK_TTL_MS);
        t.done();
      }
    },
  });

  beforeAll(async () => {
    kernel = await startTestKernel(() => ({ decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'bounded', ruleId: 'cap-runtime', policySnapshot: 'snap-test', constraints: { maxRuntimeMs: 60_000n } }));
    rig = await startSchedulerRig({ instanceId: 'sched-lease-recheck', kernelAddress: kernel.address, env: { SCHEDULER_JOB_LOCK_TTL: `${LOCK_TTL_MS}ms` }, deps: { wrapStore } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-lease', topics: ['job.lease'], replyFor: () => 'succeed' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-lease' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('a replica that lost its lock during the max_runtime_ms write does not publish; the attempt goes out once, after the lock is free', async () => {
    const id = `lease-recheck-${process.pid}`;
    let resumed!: () => void;
    const woke = new Promise<void>((r) => (resumed = r));
    takeOver = { id, done: resumed };
    const job = await rig.store.createJob({ id, tenant: 'acme', topic: 'job.lease', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const redeliveredBefore = await rig.counter('cordum_bus_redeliveries_total');
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${id}:0:0` });
    await woke;
    const recorded = await rig.store.getJob(id);
    expect(recorded).toMatchObject({ state: 'DISPATCHED', attempts: 1, dispatch: { published: false } });
    // Before: the zombie published right after its bound's write, while the other replica held
    // the lock (and could republish the same attempt, D2). Now the resumed pass hands the submit
    // back (NAK): its redelivery is the latch (the zombie's publish, before, ended in an ack).
    await waitFor(async () => (await rig.counter('cordum_bus_redeliveries_total')) > redeliveredBefore, 10_000, { message: 'the resumed pass handed the submit back' });
    expect(worker.count(id)).toBe(0);
    // The other replica goes away: the redelivered submit republishes the attempt, once.
    await rig.redis.del(jobKeys.lock(id));
    await waitFor(async () => (await rig.store.getJob(id))?.state === 'SUCCEEDED', 20_000, { message: 'SUCCEEDED once the lock is free' });
    expect(worker.count(id)).toBe(1);
    expect(worker.executions.get(id)?.[0]?.request.dispatch?.dispatchId).toBe(recorded?.dispatch?.dispatchId);
  }, 40_000);
});
