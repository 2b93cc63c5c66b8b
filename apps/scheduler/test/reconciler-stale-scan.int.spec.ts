// The reconciler acts on the due lists it read at the start of its scan, each job under its lock.
// A pause between the list and the lock (a GC pause, a leader frozen and resumed, a long scan)
// lets the job move on to a newer attempt in the same state; that attempt, only milliseconds old,
// must not be timed out or replaced for the one that was due. In process against real Redis +
// NATS; the pause is the scheduler's `wrapStore` seam holding a scan right after its list read.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import type { JobRecord, JobState, JobStore } from '@cordum/job-store';
import { create, encodePacket, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startGhost, type Ghost } from './ghost';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TIMEOUT_MS = 3_000;

describe('reconciler: a job moved on to a newer attempt after the scan listed it (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  let ghost: Ghost;
  const tmp = mkdtempSync(join(tmpdir(), 'sched-stale-scan-'));
  /** The next scan whose list of `state` names `id` stops right after that read until `release`. */
  let freeze: { id: string; state: JobState; entered: () => void; release: Promise<void> } | undefined;
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async listActive(state, before, limit) {
      const list = await s.listActive(state, before, limit);
      const f = freeze;
      if (f && f.state === state && list.some((e) => e.id === f.id)) {
        freeze = undefined;
        f.entered();
        await f.release;
      }
      return list;
    },
  });
  /** Arms the freeze; answers when the scan is held, and how to let it go on. */
  function freezeScanOf(id: string, state: JobState): { held: Promise<void>; release: () => void } {
    let entered!: () => void;
    let release!: () => void;
    const held = new Promise<void>((r) => (entered = r));
    freeze = { id, state, entered, release: new Promise<void>((r) => (release = r)) };
    return { held, release };
  }

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, `reconciler:\n  dispatch_timeout_seconds: ${TIMEOUT_MS / 1000}\n  running_timeout_seconds: ${TIMEOUT_MS / 1000}\n  scan_interval_seconds: 0.3\n`);
    rig = await startSchedulerRig({ instanceId: 'sched-stale-scan', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts }, deps: { wrapStore } });
    // Starts (progress) and never answers by itself.
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-stale-run', topics: ['job.stale-run'], replyFor: () => 'none' });
    // Without start acks and subscribed to nothing: an attempt to it stays DISPATCHED.
    ghost = await startGhost({ natsUrl: rig.natsServer.url, id: 'gh-stale-disp', topics: ['job.stale-disp'], startAck: false });
    await waitFor(() => ['tw-stale-run', 'gh-stale-disp'].every((id) => rig.scheduler.workers.live().some((v) => v.workerId === id && v.readyTopics.length > 0)), 10_000, { message: 'workers registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await ghost?.stop();
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  const submit = (id: string, topic: string): Promise<JobRecord> => rig.submit(id, topic);
  const getJob = (id: string): Promise<JobRecord> => rig.job(id);

  it('RUNNING: attempt 2, started after the scan listed attempt 1 as past its running timeout, runs its own full timeout', async () => {
    const id = `stale-run-${process.pid}`;
    const scan = freezeScanOf(id, 'RUNNING');
    await submit(id, 'job.stale-run');
    await waitFor(async () => (await rig.store.getJob(id))?.state === 'RUNNING', 10_000, { message: 'attempt 1 RUNNING' });
    await scan.held; // a scan listed attempt 1 as past its running timeout, then paused
    // Attempt 1 answers retryable: attempt 2 goes out and starts while the scan is paused.
    await worker.reply(worker.executions.get(id)![0]!.request, JobStatus.FAILED_RETRYABLE);
    const second = await waitFor(async () => {
      const j = await getJob(id);
      return j.state === 'RUNNING' && j.attempts === 2 ? j : null;
    }, 10_000, { message: 'attempt 2 RUNNING' });
    scan.release();
    const end = await waitFor(async () => {
      const j = await getJob(id);
      return j.state === 'TIMEOUT' ? j : null;
    }, 15_000, { message: 'attempt 2 timed out' });
    // Before: TIMEOUT running_timeout within ~50 ms of attempt 2's start.
    expect(end).toMatchObject({ attempts: 2, error: { code: 'running_timeout' } });
    expect(end.finishedAt! - second.updatedAt).toBeGreaterThanOrEqual(TIMEOUT_MS);
  }, 40_000);

  it('DISPATCHED: attempt 2, dispatched after the scan listed attempt 1 as past its dispatch timeout, gets its own full timeout', async () => {
    const id = `stale-disp-${process.pid}`;
    const scan = freezeScanOf(id, 'DISPATCHED');
    await submit(id, 'job.stale-disp');
    const first = await waitFor(async () => {
      const j = await getJob(id);
      return j.state === 'DISPATCHED' && j.dispatch?.published ? j : null;
    }, 10_000, { message: 'attempt 1 published' });
    await scan.held; // a scan listed attempt 1 as past its dispatch timeout, then paused
    // A worker that sends no start ack answers attempt 1 retryable: attempt 2 goes out.
    const result = create(JobResultSchema, { jobId: id, status: JobStatus.FAILED_RETRYABLE, workerId: ghost.id, errorCode: 'flaky', dispatch: { dispatchId: first.dispatch!.dispatchId, attempt: 1n, assignedWorkerId: ghost.id } });
    await rig.bus.publish(subjects.result, encodePacket(newPacket(ghost.id, { case: 'jobResult', value: result })), { msgId: `result:${id}:1` });
    const second = await waitFor(async () => {
      const j = await getJob(id);
      return j.state === 'DISPATCHED' && j.attempts === 2 && j.dispatch?.published ? j : null;
    }, 10_000, { message: 'attempt 2 published' });
    scan.release();
    const end = await waitFor(async () => {
      const j = await getJob(id);
      return j.state === 'TIMEOUT' ? j : null;
    }, 15_000, { message: 'attempt 2 timed out' });
    // Before: TIMEOUT dispatch_timeout within milliseconds of attempt 2's publish.
    expect(end).toMatchObject({ attempts: 2, error: { code: 'dispatch_timeout' } });
    expect(end.finishedAt! - second.dispatchedAt!).toBeGreaterThanOrEqual(TIMEOUT_MS);
  }, 40_000);
});
