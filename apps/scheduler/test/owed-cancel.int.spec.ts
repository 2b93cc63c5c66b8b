// P134: a JobCancel is owed from before the write that ends its job (job:cancel:outbox), and the
// replayer leader sends any one still owed at its due time. A writer killed between its CANCELLED
// or TIMEOUT write and its publish, or a publish that failed, no longer leaves the worker running
// a job nobody will tell it to stop: the worker here sends nothing after its start ack (a CAP
// worker without keep-alives), so P127's resend at the next progress never comes.
// P135: a sent one stays owed, due again later, until the attempt answers, so a worker that was
// cut off from NATS when it went out hears a later one.
// In process against real Redis + NATS; the worker is the test's.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import { CANCEL_OWED_AFTER_MS, jobKeys, type JobState, type JobStore } from '@cordum/job-store';
import { create, encodePacket, JobCancelSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import type { TestWorker } from './harness';
import { listenForCancels, startedJob, startRunnerRig, type RunnerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.owed-cancel';

describe('a JobCancel owed to a worker is sent by the replayer leader (in-process, real Redis + NATS)', () => {
  let setup: RunnerRig | undefined;
  let rig: SchedulerRig;
  let worker: TestWorker;
  let listener: ReturnType<typeof listenForCancels> | undefined;
  const tmp = mkdtempSync(join(tmpdir(), 'owed-cancel-'));
  /** The job's outbox score at each CANCELLED or TIMEOUT write the scheduler made (null: not owed then). */
  const owedAtWrite = new Map<string, (number | null)[]>();
  /** The due times the job's entry was re-filed at after a send (P135), in order, once written. */
  const deferred = new Map<string, number[]>();
  /** Job ids the replayer leader has read from the outbox as due. */
  const listedDue = new Set<string>();

  const owedScore = async (id: string): Promise<number | null> => {
    const s = await rig.redis.zscore(jobKeys.cancelOutbox(), id);
    return s === null ? null : Number(s);
  };
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async transition(id, to: JobState, opts) {
      if (to === 'CANCELLED' || to === 'TIMEOUT') owedAtWrite.set(id, [...(owedAtWrite.get(id) ?? []), await owedScore(id)]);
      return s.transition(id, to, opts);
    },
    async listCancelsDue(nowMs, limit) {
      const due = await s.listCancelsDue(nowMs, limit);
      for (const e of due) listedDue.add(e.id);
      return due;
    },
    async deferCancel(id, dueAtMs) {
      await s.deferCancel(id, dueAtMs);
      deferred.set(id, [...(deferred.get(id) ?? []), dueAtMs]);
    },
  });

  beforeAll(async () => {
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 60\n  running_timeout_seconds: 60\n  scan_interval_seconds: 0.3\n');
    setup = await startRunnerRig({ policy: [], instanceId: 'sched-owed-cancel', env: { TIMEOUT_CONFIG_PATH: timeouts, SCHEDULER_REPLAY_INTERVAL: '200ms' }, deps: { wrapStore }, workerId: 'tw-owed', topic: TOPIC });
    ({ rig, worker } = setup);
    listener = listenForCancels(rig.bus);
  }, 60_000);

  afterAll(async () => {
    listener?.stop();
    await setup?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** The worker's CANCELLED answer for job `id`, naming attempt `dispatchId` (default: the one it ran), as a CAP worker sends it after its cancel. */
  const answer = (id: string, dispatchId?: string): Promise<void> => worker.reply(worker.executions.get(id)![0]!.request, JobStatus.CANCELLED, { dispatchId });
  const runningJob = (name: string) => startedJob(rig, worker, `${name}-${process.pid}`, TOPIC);
  const cancelsFor = (jobId: string) => (listener?.heard ?? []).filter((c) => c.cancel.jobId === jobId);

  it('a job CANCELLED by a gateway that died before its publish: the JobCancel goes out at the due time, once, without any progress from the worker', async () => {
    const { id, dispatch } = await runningJob('gateway-died');
    const sent = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' });
    // What the gateway's cancel leaves when it is killed right after its write: the entry it filed
    // first, and CANCELLED under its lock. Due in 800 ms here (CANCEL_OWED_AFTER_MS in service).
    const due = Date.now() + 800;
    await rig.store.fileCancel(id, due);
    const token = 'gateway-test:1';
    await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
    expect((await rig.store.transition(id, 'CANCELLED', { token, from: ['RUNNING'], release: true, patch: { error: { code: 'cancelled', message: 'operator stop' } } })).ok).toBe(true);

    await waitFor(() => cancelsFor(id).length === 1, 10_000, { message: 'the owed JobCancel' });
    const heard = cancelsFor(id)[0]!;
    expect(heard.at).toBeGreaterThanOrEqual(due);
    expect(heard.cancel).toMatchObject({ jobId: id, reason: 'operator stop', requestedBy: 'sched-owed-cancel', dispatch: { dispatchId: dispatch.dispatchId, attempt: dispatch.attempt } });
    // Counted after the entry is re-filed (P135): due again CANCEL_OWED_AFTER_MS after the send, as
    // the worker has not answered.
    await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' })) === sent + 1, 5_000, { message: 'counted sent' });
    expect(deferred.get(id)).toHaveLength(1);
    expect(deferred.get(id)![0]).toBeGreaterThanOrEqual(due + CANCEL_OWED_AFTER_MS);
    expect(await owedScore(id)).toBe(deferred.get(id)![0]);
    // A later turn (proved by an entry filed now, for no job, being dropped) does not send it before then.
    const notNeeded = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'not_needed' });
    await rig.store.fileCancel(`marker-${process.pid}`, Date.now());
    await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'not_needed' })) === notNeeded + 1, 5_000, { message: 'a later turn' });
    expect(cancelsFor(id)).toHaveLength(1);
    expect(await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' })).toBe(sent + 1);
    expect((await rig.job(id)).state).toBe('CANCELLED');
  });

  it('an owed cancel whose write never happened (a busy lock, a job that went on) is dropped unsent, and the job runs on', async () => {
    const { id } = await runningJob('never-written');
    const notNeeded = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'not_needed' });
    await rig.store.fileCancel(id, Date.now());
    await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'not_needed' })) === notNeeded + 1, 5_000, { message: 'counted not needed' });
    expect(await owedScore(id)).toBeNull();
    expect(cancelsFor(id)).toEqual([]);
    expect((await rig.job(id)).state).toBe('RUNNING');
  });

  it('a cancel from the bus: owed before its CANCELLED write, due again 10 s after the scheduler\'s own JobCancel went out (P135)', async () => {
    const { id, dispatch } = await runningJob('bus-cancel');
    const before = Date.now();
    const value = create(JobCancelSchema, { jobId: id, reason: 'workflow stopped', requestedBy: 'wf-engine' });
    await rig.bus.publish(subjects.cancel, encodePacket(newPacket('wf-engine', { case: 'jobCancel', value })), { msgId: `wf-cancel:${id}` });
    await waitFor(async () => (await rig.job(id)).state === 'CANCELLED', 10_000, { message: 'CANCELLED from the bus' });
    // The scheduler's JobCancel for the attempt out (the bus one named none).
    await waitFor(() => cancelsFor(id).some((c) => c.cancel.dispatch?.dispatchId === dispatch.dispatchId), 5_000, { message: 'the attempt\'s JobCancel' });
    const owed = owedAtWrite.get(id);
    expect(owed).toHaveLength(1);
    expect(owed?.[0]).toEqual(expect.any(Number));
    await waitFor(() => deferred.has(id), 5_000, { message: 'the entry re-filed after the publish' });
    expect(deferred.get(id)![0]).toBeGreaterThanOrEqual(before + CANCEL_OWED_AFTER_MS);
    expect(await owedScore(id)).toBe(deferred.get(id)![0]);
  });

  it('a reconciler TIMEOUT (deadline_ms passed): owed before the write, its JobCancel sent and the entry due again', async () => {
    const id = `deadline-${process.pid}`;
    const job = await rig.store.createJob({ id, tenant: 'acme', topic: TOPIC, traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING', deadlineMs: 2_000 });
    await rig.publishSubmit(job);
    await waitFor(async () => (await rig.job(id)).state === 'RUNNING', 10_000, { message: `${id} RUNNING` });
    await waitFor(async () => (await rig.job(id)).state === 'TIMEOUT', 10_000, { message: `${id} TIMEOUT at its deadline` });
    await waitFor(() => cancelsFor(id).length === 1, 5_000, { message: 'the JobCancel for the timed-out attempt' });
    expect(cancelsFor(id)[0]?.cancel.reason).toBe('deadline_ms passed');
    expect(owedAtWrite.get(id)?.[0]).toEqual(expect.any(Number));
    await waitFor(() => deferred.has(id), 5_000, { message: 'the entry re-filed after the publish' });
    expect(await owedScore(id)).toBe(deferred.get(id)![0]);
  });

  it('P135: a worker cut off from NATS when its JobCancel went out hears it at the next due time, and its answer ends the resends', async () => {
    const { id, dispatch } = await runningJob('cut-off');
    const value = create(JobCancelSchema, { jobId: id, reason: 'stop now', requestedBy: 'wf-engine' });
    await rig.bus.publish(subjects.cancel, encodePacket(newPacket('wf-engine', { case: 'jobCancel', value })), { msgId: `wf-cancel:${id}` });
    await waitFor(() => cancelsFor(id).some((c) => c.cancel.dispatch?.dispatchId === dispatch.dispatchId), 10_000, { message: 'the attempt\'s JobCancel' });
    await waitFor(() => deferred.has(id), 5_000, { message: 'due again 10 s after the send' });
    // The worker's connection is back only now (a subscription made after the send), and it sent
    // no progress. Its next due time is brought forward rather than waited for.
    const late = listenForCancels(rig.bus);
    try {
      const sent = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' });
      const resentFrom = Date.now();
      await rig.store.fileCancel(id, resentFrom);
      await waitFor(() => late.heard.some((c) => c.cancel.jobId === id), 10_000, { message: 'the JobCancel sent again' });
      expect(late.heard.filter((c) => c.cancel.jobId === id).map((c) => c.cancel)).toEqual([expect.objectContaining({ jobId: id, reason: 'stop now', dispatch: expect.objectContaining({ dispatchId: dispatch.dispatchId }) })]);
      await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' })) === sent + 1, 5_000, { message: 'counted sent' });
      expect(deferred.get(id)).toHaveLength(2);
      expect(deferred.get(id)![1]).toBeGreaterThanOrEqual(resentFrom + CANCEL_OWED_AFTER_MS);
      expect(await owedScore(id)).toBe(deferred.get(id)![1]);
    } finally {
      late.stop();
    }
    // The worker stops and answers CANCELLED for the attempt: nothing is owed any more.
    const answered = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'answered' });
    await answer(id);
    await waitFor(async () => (await owedScore(id)) === null, 10_000, { message: 'the entry removed by the answer' });
    await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'answered' })) === answered + 1, 5_000, { message: 'counted answered' });
    expect((await rig.job(id)).state).toBe('CANCELLED');
  });

  it('P135: an answer naming a replaced attempt leaves the current attempt\'s cancel owed', async () => {
    const { id, dispatch } = await runningJob('other-attempt');
    const value = create(JobCancelSchema, { jobId: id, reason: 'stop', requestedBy: 'wf-engine' });
    await rig.bus.publish(subjects.cancel, encodePacket(newPacket('wf-engine', { case: 'jobCancel', value })), { msgId: `wf-cancel:${id}` });
    await waitFor(() => deferred.has(id), 10_000, { message: 'owed again after the send' });
    const ignored = await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'result', reason: 'terminal' });
    await answer(id, `${dispatch.dispatchId}-old`);
    await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'result', reason: 'terminal' })) === ignored + 1, 10_000, { message: 'the old attempt\'s answer handled' });
    expect(await owedScore(id)).not.toBeNull();
  });
  // Last: it freezes the rig's nats-server.
  it('NATS frozen: a failed send is tried again 5 s later, and an answer that came meanwhile keeps the entry removed', async () => {
    const cancelled = async (name: string): Promise<string> => {
      const { id } = await runningJob(name);
      const token = `gateway-test:${name}`;
      await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
      expect((await rig.store.transition(id, 'CANCELLED', { token, from: ['RUNNING'], release: true, patch: { error: { code: 'cancelled', message: `stop ${name}` } } })).ok).toBe(true);
      return id;
    };
    const answeredId = await cancelled('nats-frozen-answered');
    const retriedId = await cancelled('nats-frozen-retried');
    const failed = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'failed' });
    const sent = await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' });
    await rig.natsServer.process.freeze();
    try {
      // The leader reads the entry and its publish hangs (2 s budget); the worker's answer removes
      // the entry meanwhile (done here directly: the answer itself cannot cross a frozen bus).
      await rig.store.fileCancel(answeredId, Date.now());
      await waitFor(() => listedDue.has(answeredId), 10_000, { message: 'the entry read by the leader' });
      expect(await rig.store.removeCancel(answeredId)).toBe(true);
      await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'failed' })) === failed + 1, 10_000, { message: 'the send failed' });
      expect(await owedScore(answeredId)).toBeNull();

      const filedAt = Date.now();
      await rig.store.fileCancel(retriedId, filedAt);
      await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'failed' })) === failed + 2, 10_000, { message: 'the second send failed' });
      expect(await owedScore(retriedId)).toBeGreaterThanOrEqual(filedAt + 5_000);
    } finally {
      rig.natsServer.process.thaw();
    }
    // A timed-out publish may still reach the server once it runs again, so what the listener
    // hears does not tell the two apart: the leader's count of sends does (only the re-filed
    // entry is left to send).
    await waitFor(async () => (await rig.counter('cordum_scheduler_owed_cancels_total', { outcome: 'sent' })) === sent + 1, 15_000, { message: 'sent once NATS answers' });
    await waitFor(() => cancelsFor(retriedId).length > 0, 5_000, { message: 'the JobCancel heard' });
    expect(cancelsFor(retriedId)[0]!.cancel.reason).toBe('stop nats-frozen-retried');
    expect(await owedScore(answeredId)).toBeNull();
  }, 60_000);
});
