// P224: routing reserves the chosen worker's slot before the awaited writes of a dispatch, so
// handlers running at once do not all see the same free slot. Ten jobs submitted together to a
// worker with max_parallel_jobs 2 sent all ten to it (eight came back refused worker_busy, and
// under a backlog enough refusals failed jobs that never ran). Now two go and eight wait (D48
// backpressure, counted). In process against real Redis + NATS; the worker is a ghost that
// heartbeats once (so only the scheduler's own count can hold jobs back) and counts what it is sent.
import { waitFor } from '@cordum/testing';
import { startGhost, type Ghost } from './ghost';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('jobs submitted at once to a worker with 2 slots (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let ghost: Ghost;
  const sent: string[] = [];
  let unsubscribe: () => void = () => undefined;

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    rig = await startSchedulerRig({ instanceId: 'sched-reserve', kernelAddress: kernel.address });
    // One heartbeat in the test's time: it says 0 of 2 busy for the whole burst.
    ghost = await startGhost({ natsUrl: rig.natsServer.url, id: 'gh-two', topics: ['job.two'], startAck: false, maxParallelJobs: 2, heartbeatMs: 600_000 });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'gh-two' && v.readyTopics.includes('job.two')), 10_000, { message: 'worker registered' });
    // Direct (the ghost's handshake lists worker.<id>.jobs) or, if not, on the topic.
    const subs = ['worker.gh-two.jobs', 'job.two'].map((subject) => rig.bus.subscribe(subject, () => sent.push(subject)));
    unsubscribe = () => subs.forEach((s) => s.unsubscribe());
    await rig.bus.flush();
  }, 60_000);

  afterAll(async () => {
    unsubscribe();
    await ghost?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  it('sends it 2 and holds the other 8 back as backpressure, instead of sending all 10', async () => {
    const before = await rig.counter('cordum_scheduler_backpressure_total');
    const ids = Array.from({ length: 10 }, (_, i) => `two-${process.pid}-${i}`);
    await Promise.all(ids.map((id) => rig.submit(id, 'job.two')));
    // Every job looked at: dispatched, or held back at least once.
    const dispatched = async (): Promise<number> => (await Promise.all(ids.map((id) => rig.job(id)))).filter((j) => j.state === 'DISPATCHED').length;
    await waitFor(async () => (await dispatched()) + (await rig.counter('cordum_scheduler_backpressure_total')) - before >= 10, 10_000, { message: 'every job dispatched or held back', intervalMs: 50 });
    expect(await dispatched()).toBe(2);
    await waitFor(() => sent.length >= 2, 5_000, { message: 'the two requests reached the worker' });
    expect(sent.length).toBe(2);
    // The other eight are still waiting, none refused or failed.
    const states = (await Promise.all(ids.map((id) => rig.job(id)))).map((j) => j.state).sort();
    expect(states).toEqual([...Array<string>(2).fill('DISPATCHED'), ...Array<string>(8).fill('PENDING')]);
  }, 30_000);
});
