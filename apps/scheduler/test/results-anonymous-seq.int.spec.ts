// P41 for an older result: a result without a dispatch id applies to the job's current attempt,
// and the job records the stream sequence of the last one applied. A redelivery of an older one
// (its handler failed after its write, and meanwhile a later result was applied) must not apply to
// the attempt that later result started. In process against real Redis + NATS; the handler's
// failure is the scheduler's `wrapStore` seam.
import { subjects } from '@cordum/bus';
import type { JobRecord, JobStore } from '@cordum/job-store';
import { create, encodePacket, JobRequestSchema, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('results: an older result without a dispatch id, redelivered (P41, in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  /**
   * The job whose RETRYING write after attempt 1 is made, then held until `release`, then throws:
   * the handler of result 1 fails after its writes (the lock is already released with the write,
   * and the retry it filed sends attempt 2, P140), so result 1 is redelivered once released.
   */
  let failMark: { id: string; entered: () => void; release: Promise<void> } | undefined;
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async transition(id, to, o) {
      const w = await s.transition(id, to, o);
      const f = failMark;
      if (f && f.id === id && to === 'RETRYING' && o.current?.attempts === 1) {
        failMark = undefined;
        f.entered();
        await f.release;
        throw new Error('injected: the handler failed after its RETRYING write for attempt 1');
      }
      return w;
    },
  });

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    rig = await startSchedulerRig({ instanceId: 'sched-anon-seq', kernelAddress: kernel.address, deps: { wrapStore } });
    // Starts each attempt (progress) and never answers by itself.
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-anon', topics: ['job.anon'], replyFor: () => 'none' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-anon' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
  });

  const getJob = (id: string): Promise<JobRecord> => rig.job(id);
  const counter = (name: string, label: string, value: string): Promise<number> => rig.counter(name, { [label]: value });
  /** A FAILED_RETRYABLE result without `dispatch` (CONTRACT §3: it applies to the current attempt). */
  async function anonymousRetryable(id: string, msgId: string): Promise<void> {
    const result = create(JobResultSchema, { jobId: id, status: JobStatus.FAILED_RETRYABLE, workerId: worker.id, errorCode: 'flaky', errorMessage: 'try again' });
    await rig.bus.publish(subjects.result, encodePacket(newPacket(worker.id, { case: 'jobResult', value: result })), { msgId });
  }
  const runningOn = (attempt: number) => async (id: string) => {
    const j = await getJob(id);
    return j.state === 'RUNNING' && j.attempts === attempt ? j : null;
  };

  it('is ignored as already applied, not applied to the attempt the later result started', async () => {
    const id = `anon-seq-${process.pid}`;
    const job = await rig.store.createJob({ id, tenant: 'acme', topic: 'job.anon', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${id}:0:0` });
    await waitFor(() => runningOn(1)(id), 10_000, { message: 'attempt 1 RUNNING' });

    let entered!: () => void;
    let release!: () => void;
    const held = new Promise<void>((r) => (entered = r));
    failMark = { id, entered, release: new Promise<void>((r) => (release = r)) };
    // Result 1 applies to attempt 1, whose retry then starts attempt 2; its handler fails (held for now).
    await anonymousRetryable(id, `anon:${id}:1`);
    await held;
    const second = await waitFor(() => runningOn(2)(id), 10_000, { message: 'attempt 2 RUNNING' });
    // Result 2 applies to attempt 2 and starts attempt 3: the job now holds result 2's sequence.
    await anonymousRetryable(id, `anon:${id}:2`);
    const third = await waitFor(() => runningOn(3)(id), 10_000, { message: 'attempt 3 RUNNING' });
    expect(third.resultSeq).toBeGreaterThan(second.resultSeq ?? 0);

    const before = await counter('cordum_scheduler_ignored_packets_total', 'reason', 'already_applied');
    release(); // result 1's handler fails now: JetStream redelivers result 1
    // Before: the redelivery applied to attempt 3 (its sequence is not the job's last one), which
    // ended the job FAILED max_attempts (or, with attempts left, started attempt 4 while 3 ran).
    await waitFor(async () => (await counter('cordum_scheduler_ignored_packets_total', 'reason', 'already_applied')) > before || (await getJob(id)).attempts !== 3 || (await getJob(id)).state !== 'RUNNING', 15_000, {
      message: 'the redelivered result 1 handled',
    });
    expect(await getJob(id)).toMatchObject({ state: 'RUNNING', attempts: 3, resultSeq: third.resultSeq });
    expect(worker.count(id)).toBe(3);
  }, 40_000);
});
