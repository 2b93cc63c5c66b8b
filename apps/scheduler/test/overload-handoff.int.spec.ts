// D48 backpressure meets D8's delivery bound: a submit whose every candidate worker is at capacity
// is NAKed (250 ms) until its 20 deliveries run out. Its last delivery files the job in job:retry
// (P130), so the replayer leader dispatches it as soon as a worker has room, instead of the job
// waiting until the replayer finds it as an orphan (SCHEDULER_PENDING_REPLAY_AGE, 30 s).
// In process against real Redis + NATS; the worker is a ghost whose heartbeats report its load.
import { jobKeys } from '@cordum/job-store';
import { waitFor } from '@cordum/testing';
import { startGhost, type Ghost } from './ghost';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('a submit that outlasts its deliveries while every worker is full (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let ghost: Ghost;

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    rig = await startSchedulerRig({ instanceId: 'sched-overload', kernelAddress: kernel.address });
    // 100 of its 100 slots busy: overloaded (≥ 90 %).
    ghost = await startGhost({ natsUrl: rig.natsServer.url, id: 'gh-full', topics: ['job.full'], startAck: false, activeJobs: 100 });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'gh-full' && v.activeJobs === 100), 10_000, { message: 'worker registered, full' });
  }, 60_000);

  afterAll(async () => {
    await ghost?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('is handed to the replayer on its last delivery and dispatched once the worker has room, long before it would count as an orphan', async () => {
    const id = `full-${process.pid}`;
    const lostBefore = await rig.counter('cordum_scheduler_orphan_replayed_total', { reason: 'lost' });
    const retriesBefore = await rig.counter('cordum_scheduler_orphan_replayed_total', { reason: 'retry' });
    await rig.submit(id, 'job.full');
    // 20 deliveries NAKed 250 ms apart: then the job is in job:retry, still PENDING.
    // The counter moves once the entry is written (a poll of the entry alone could see it a turn
    // before the handler counted it).
    await waitFor(async () => (await rig.counter('cordum_scheduler_last_delivery_hand_offs_total')) === 1, 15_000, { message: 'handed off on its last delivery', intervalMs: 100 });
    expect(await rig.redis.zscore(jobKeys.retry(), id)).not.toBeNull();
    expect((await rig.job(id)).state).toBe('PENDING');
    const roomAt = Date.now();
    ghost.setActiveJobs(0);
    await waitFor(async () => (await rig.job(id)).state === 'DISPATCHED', 10_000, { message: 'dispatched once the worker has room', intervalMs: 50 });
    const job = await rig.job(id);
    expect(job.dispatch?.workerId).toBe('gh-full');
    // Within a replayer turn or two of the room, and 30 s (the orphan age) before the replayer
    // would otherwise have found it.
    expect(Date.now() - roomAt).toBeLessThan(5_000);
    expect(Date.now() - job.createdAt).toBeLessThan(rig.config.replay.pendingAgeMs - 5_000);
    // Driven from its job:retry entry (counted once the drive has returned, a moment after its
    // DISPATCHED write can be seen), not found as a lost submit.
    await waitFor(async () => (await rig.counter('cordum_scheduler_orphan_replayed_total', { reason: 'retry' })) > retriesBefore, 5_000, { message: 'counted as a retry', intervalMs: 50 });
    expect(await rig.counter('cordum_scheduler_orphan_replayed_total', { reason: 'lost' })).toBe(lostBefore);
  }, 30_000);
});
