// A worker that keeps running an attempt that has ended was never told to stop: the JobCancel was
// not published (NATS away at the gateway's cancel, P52) or did not reach it. Its progress, which
// worker-sdk repeats every heartbeat, names that attempt, and the scheduler sends the attempt's
// JobCancel again (P127); a worker running the job's current attempt is never cancelled by it.
// In process against real Redis + NATS; the worker is the test's, so the test says what it sends.
import { subjects } from '@cordum/bus';
import { cancelMsgId, jobKeys } from '@cordum/job-store';
import { create, encodePacket, JobProgressSchema, JobStatus, newPacket, type DispatchIdentity, type JobCancel } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import type { TestWorker } from './harness';
import { listenForCancels, startedJob, startRunnerRig, type RunnerRig, type SchedulerRig } from './rig';
import { RESEND_EVERY_MS } from '../src/cancels';

const TOPIC = 'job.ended-attempt';

describe('a worker running an attempt that has ended gets its JobCancel again (in-process, real Redis + NATS)', () => {
  let setup: RunnerRig | undefined;
  let rig: SchedulerRig;
  let worker: TestWorker;
  let listener: ReturnType<typeof listenForCancels> | undefined;
  /** Every JobCancel on sys.job.cancel, as a worker's core subscription hears it. */
  const cancels = (): JobCancel[] => listener?.heard.map((h) => h.cancel) ?? [];

  beforeAll(async () => {
    setup = await startRunnerRig({ policy: [], instanceId: 'sched-ended-attempt', env: { SCHEDULER_REPLAY_INTERVAL: '60s' }, workerId: 'tw-ended', topic: TOPIC });
    ({ rig, worker } = setup);
    listener = listenForCancels(rig.bus);
  }, 60_000);

  afterAll(async () => {
    listener?.stop();
    await setup?.stop();
  });

  const runningJob = (name: string) => startedJob(rig, worker, `${name}-${process.pid}`, TOPIC);

  /** The progress worker-sdk repeats every heartbeat for a job it runs. */
  const keepAlive = (jobId: string, dispatch: DispatchIdentity): void =>
    rig.bus.publishCore(subjects.progress, encodePacket(newPacket('tw-ended', { case: 'jobProgress', value: create(JobProgressSchema, { jobId, status: JobStatus.RUNNING, dispatch }) })));

  const cancelsFor = (jobId: string, dispatchId: string): JobCancel[] => cancels().filter((c) => c.jobId === jobId && c.dispatch?.dispatchId === dispatchId);

  it('a job CANCELLED whose JobCancel was never published: its attempt\'s progress gets it, again at most once a second while the worker goes on', async () => {
    const { id, dispatch } = await runningJob('lost-cancel');
    // The gateway's cancel with NATS away: CANCELLED is committed, the publish fails.
    const token = 'gateway-test:1';
    await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
    expect((await rig.store.transition(id, 'CANCELLED', { token, from: ['RUNNING'], release: true, patch: { error: { code: 'cancelled', message: 'operator stop' } } })).ok).toBe(true);
    const sent = await rig.counter('cordum_scheduler_ended_attempt_cancels_total');

    keepAlive(id, dispatch);
    await waitFor(() => cancelsFor(id, dispatch.dispatchId).length === 1, 5_000, { message: 'the JobCancel for the ended attempt' });
    const firstAt = Date.now();
    expect(cancelsFor(id, dispatch.dispatchId)[0]).toMatchObject({ jobId: id, reason: 'the job is CANCELLED', requestedBy: 'sched-ended-attempt', dispatch: { dispatchId: dispatch.dispatchId, attempt: dispatch.attempt } });
    // A worker that missed this one too (or ignores it) and reports every 50 ms hears it again,
    // once RESEND_EVERY_MS has passed: the stream keeps one (same msg id), the subscribers get each.
    let reports = 0;
    await waitFor(() => {
      keepAlive(id, dispatch);
      reports++;
      return cancelsFor(id, dispatch.dispatchId).length === 2;
    }, 5_000, { message: 'the JobCancel again', intervalMs: 50 });
    expect(Date.now() - firstAt).toBeGreaterThanOrEqual(RESEND_EVERY_MS - 50);
    expect(reports).toBeGreaterThan(5);
    expect(await rig.counter('cordum_scheduler_ended_attempt_cancels_total')).toBe(sent + 2);
    expect((await rig.job(id)).state).toBe('CANCELLED');
    expect(cancelMsgId(id, dispatch.dispatchId)).toBe(`sys.job.cancel:${id}:${dispatch.dispatchId}`);
  });

  it('a progress handled after its own attempt\'s result (SUCCEEDED) gets no JobCancel: the worker is done', async () => {
    const { id, dispatch } = await runningJob('raced');
    // The worker's result is applied (finish, as results.ts does), then the progress it sent while
    // its result was on the way.
    expect((await rig.store.finish(id, 'SUCCEEDED', { dispatchId: dispatch.dispatchId, patch: {} })).ok).toBe(true);
    keepAlive(id, dispatch);
    // An older attempt's progress, sent after it, does get one: once that is out, the first was handled.
    const old = { dispatchId: `old-${id}`, attempt: 0n, assignedWorkerId: 'tw-gone' } as DispatchIdentity;
    keepAlive(id, old);
    await waitFor(() => cancelsFor(id, old.dispatchId).length === 1, 5_000, { message: 'the JobCancel for the older attempt' });
    expect(cancelsFor(id, dispatch.dispatchId)).toEqual([]);
  });

  it('a progress of a replaced attempt: that attempt gets a JobCancel, and the job runs on in its current attempt', async () => {
    const { id, dispatch } = await runningJob('replaced');
    const ignoredBefore = await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'cancel', reason: 'stale_dispatch' });
    // The current attempt's own progress: nothing to stop.
    keepAlive(id, dispatch);
    // An older attempt of the job, still running on some worker.
    const old = { dispatchId: `old-${id}`, attempt: 0n, assignedWorkerId: 'tw-gone' } as DispatchIdentity;
    keepAlive(id, old);
    await waitFor(() => cancelsFor(id, old.dispatchId).length === 1, 5_000, { message: 'the JobCancel for the replaced attempt' });
    expect(cancelsFor(id, old.dispatchId)[0]?.reason).toBe(`attempt ${old.dispatchId} was replaced`);
    // The schedulers' own cancel consumer takes it too, and ignores it: it names a stale attempt.
    await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'cancel', reason: 'stale_dispatch' })) > ignoredBefore, 5_000, { message: 'the scheduler ignored its own cancel' });
    const job = await rig.job(id);
    expect(job.state).toBe('RUNNING');
    expect(job.dispatch?.dispatchId).toBe(dispatch.dispatchId);
    // The current attempt's progress (sent first, handled first) was answered with nothing.
    expect(cancels().filter((c) => c.jobId === id && c.dispatch?.dispatchId !== old.dispatchId)).toEqual([]);
  });
});
