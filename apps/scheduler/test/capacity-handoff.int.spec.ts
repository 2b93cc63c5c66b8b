// P225: a result that frees a worker's slot drives the longest waiter for capacity at once. A
// backlog of short jobs on a worker with 2 slots outlasts the 20 JetStream deliveries of its
// submits (≈ 5 s of 250 ms NAKs, D48); after them a waiting job went only at the replayer leader's
// turn, so the backlog drained at max_parallel_jobs per SCHEDULER_REPLAY_INTERVAL. Here that
// interval is 60 s, so every job done well inside it was driven by a freed slot. Executions are
// counted on the worker: each job ran exactly once. In process against real Redis + NATS.
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.capacity.handoff';
/** Its first attempt fails retryably (the test worker's 'retry-once'). */
const TOPIC_RETRY = 'job.capacity.retry';
const JOBS = 80;

describe('a backlog on a worker with 2 slots (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    rig = await startSchedulerRig({ instanceId: 'sched-capacity', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '60s' } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-two-slots', topics: [TOPIC, TOPIC_RETRY], replyFor: (t) => (t === TOPIC_RETRY ? 'retry-once' : 'succeed'), maxParallelJobs: 2, runMs: 150 });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-two-slots' && v.readyTopics.includes(TOPIC)), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('drains at the worker\'s pace after the submits run out of deliveries, not at the replayer\'s turn', async () => {
    const ids = Array.from({ length: JOBS }, (_, i) => `cap-${process.pid}-${i}`);
    for (const id of ids) await rig.submit(id, TOPIC);
    // 80 jobs × 150 ms / 2 slots ≈ 6 s of work: past the deliveries' ≈ 5 s, far inside the 60 s turn.
    await waitFor(async () => (await Promise.all(ids.map((id) => rig.job(id)))).every((j) => j.state === 'SUCCEEDED'), 30_000, { message: 'every job SUCCEEDED', intervalMs: 200 });
    expect(ids.map((id) => worker.count(id))).toEqual(Array<number>(JOBS).fill(1));
    expect(await rig.counter('cordum_scheduler_capacity_hand_offs_total')).toBeGreaterThan(0);
    // P257: a job allowed and found waiting looks again without a Check while the worker is full:
    // one Check at its first look and one before its dispatch (a lost hand-off race adds one; a
    // loaded CI box lost more of them: 241 for 3 × 80 once). Before, each 250 ms look asked the
    // kernel: about 1,000 Checks for these 80 jobs, more on a slower machine.
    expect(await rig.counter('cordum_scheduler_backpressure_total')).toBeGreaterThan(3 * JOBS);
    expect(kernel.checks.filter((c) => ids.includes(c.jobId)).length).toBeLessThanOrEqual(5 * JOBS);
    // waits, not tries: no job was refused or charged an attempt for the backlog
    const jobs = await Promise.all(ids.map((id) => rig.job(id)));
    expect(jobs.filter((j) => j.attempts !== 1 || (j.busyRefusals ?? 0) > 0).map((j) => j.id)).toEqual([]);
  }, 60_000);

  it('a hint whose job is no longer PENDING is dropped: a RETRYING job keeps its backoff (D13), even when another replica\'s stale hint names it', async () => {
    const retried = `cap-retry-${process.pid}`;
    await rig.submit(retried, TOPIC_RETRY);
    await waitFor(async () => (await rig.job(retried)).state === 'RETRYING', 10_000, { message: 'attempt 1 failed retryably', intervalMs: 50 });
    // What a replica that saw it wait would still hold (this one deleted its own at the dispatch).
    rig.scheduler.capacityWaiters.add(TOPIC_RETRY, retried, { labels: {}, requires: [] });
    // Behind it, a PENDING job whose submit was never published: only a hand-off can drive it, and
    // hints are looked at one after another, so its run says the look at the stale hint is over.
    const marker = `cap-marker-${process.pid}`;
    await rig.store.createJob({ id: marker, tenant: 'acme', topic: TOPIC_RETRY, traceId: `t-${marker}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    rig.scheduler.capacityWaiters.add(TOPIC_RETRY, marker, { labels: {}, requires: [] });
    const handOffs = await rig.counter('cordum_scheduler_capacity_hand_offs_total');
    // A result frees a slot of the worker: the hand-off looks at the hints.
    const other = `cap-free-${process.pid}`;
    await rig.submit(other, TOPIC);
    await waitFor(async () => (await rig.job(other)).state === 'SUCCEEDED', 10_000, { message: 'the other job done', intervalMs: 50 });
    await waitFor(() => worker.count(marker) === 1, 5_000, { message: 'the job behind the stale hint handed the slot' });
    // Not driven: its backoff's entry (the replayer's turn is 60 s here) is still the only way on.
    const job = await rig.job(retried);
    expect({ state: job.state, attempts: job.attempts, runs: worker.count(retried) }).toEqual({ state: 'RETRYING', attempts: 1, runs: 1 });
    expect(await rig.redis.zscore('job:retry', retried)).not.toBeNull();
    // One hand-off, the marker's (counted once its dispatch has returned).
    await waitFor(async () => (await rig.counter('cordum_scheduler_capacity_hand_offs_total')) > handOffs, 5_000, { message: 'the hand-off counted' });
    expect(await rig.counter('cordum_scheduler_capacity_hand_offs_total')).toBe(handOffs + 1);
    // Its worker answers (retryably, on this topic) before the test stops it.
    await waitFor(async () => (await rig.job(marker)).state === 'RETRYING', 5_000, { message: 'the marker answered' });
  }, 30_000);
});
