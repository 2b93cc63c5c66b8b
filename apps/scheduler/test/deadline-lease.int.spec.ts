// The reconciler's deadline pass rewrites a job's `job:deadline` entry under the job lock, from
// the record (and entry) it read under it. The entry is not fenced, and it is the current
// attempt's max_runtime_ms bound (P65): a reconciler that resumes after its lock expired (a GC
// pause, a frozen process) must not drop or move the bound a newer attempt recorded meanwhile,
// or that attempt runs unbounded (the pass only visits entries that exist) or ends early. So the
// write is made only while the lease is safe (D3). In process against real Redis + NATS; the
// freeze is the scheduler's `wrapStore` seam holding the pass right after a read while another
// replica takes the lock and records the newer bound.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jobKeys, type JobStore } from '@cordum/job-store';
import { waitFor } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const LOCK_TTL_MS = 3_000;
const MAX_RUNTIME_MS = 60_000;

describe('deadline pass: a bound written by a newer attempt survives a reconciler that lost its lock (P65, D3, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  const tmp = mkdtempSync(join(tmpdir(), 'deadline-lease-'));
  /** The pass's next read of `method` for `id` is followed by a takeover of the job's lock (another replica) that records `bound`. */
  let freeze: { method: 'getJob' | 'deadlineScore'; id: string; bound: number; resumed: () => void } | undefined;
  const frozen = async (method: 'getJob' | 'deadlineScore', id: string): Promise<void> => {
    const f = freeze;
    if (!f || f.method !== method || f.id !== id) return;
    freeze = undefined;
    // Our lock expired while we were "frozen"; another replica took it and published a newer
    // attempt, which recorded its own bound.
    await rig.redis.set(jobKeys.lock(id), 'other-replica:999999', 'PX', 60_000);
    await rig.redis.zadd(jobKeys.deadline(), f.bound, id);
    // Frozen a whole TTL: our lease is unsafe by its own clock, and its next renew finds the lock taken.
    await sleep(LOCK_TTL_MS);
    f.resumed();
  };
  /** Deadline scans started (listDeadlineDue): the reconciler's turns run one at a time, so a new one means the frozen pass is over. */
  let scans = 0;
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    listDeadlineDue(...args) {
      scans++;
      return s.listDeadlineDue(...args);
    },
    async getJob(id) {
      const job = await s.getJob(id);
      await frozen('getJob', id);
      return job;
    },
    async deadlineScore(id) {
      const score = await s.deadlineScore(id);
      await frozen('deadlineScore', id);
      return score;
    },
  });

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 60\n  running_timeout_seconds: 60\n  scan_interval_seconds: 0.3\n');
    // The replayer never turns within a test, so nothing but the deadline pass reads these jobs.
    rig = await startSchedulerRig({ instanceId: 'sched-deadline-lease', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts, SCHEDULER_JOB_LOCK_TTL: `${LOCK_TTL_MS}ms`, SCHEDULER_REPLAY_INTERVAL: '60s' }, deps: { wrapStore } });
  }, 60_000);

  afterAll(async () => {
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** A job with max_runtime_ms whose attempt 1 went out and, with `retrying`, failed retryably. */
  async function jobAfterAttempt1(name: string, retrying: boolean): Promise<string> {
    const id = `${name}-${process.pid}`;
    await rig.store.createJob({ id, tenant: 'acme', topic: 'job.deadline-lease', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const token = 'test-owner:1';
    await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
    const dispatch = { dispatchId: `d1-${id}`, attempt: 1, published: true, subject: 'worker.gone.jobs', workerId: 'gone', startAck: true };
    const w = await rig.store.transition(id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, dispatchedAt: Date.now(), workerId: 'gone', maxRuntimeMs: MAX_RUNTIME_MS } });
    expect(w.ok).toBe(true);
    if (retrying) expect((await rig.store.transition(id, 'RETRYING', { token, from: ['DISPATCHED'] })).ok).toBe(true);
    await rig.redis.del(jobKeys.lock(id));
    return id;
  }

  /** Arms the freeze, files the entry the pass finds due, and answers the entry once the pass is over. */
  async function passFrozenAt(method: 'getJob' | 'deadlineScore', id: string, bound: number): Promise<string | null> {
    let resumed!: () => void;
    const woke = new Promise<void>((r) => (resumed = r));
    freeze = { method, id, bound, resumed };
    await rig.redis.zadd(jobKeys.deadline(), Date.now() - 1, id); // due: attempt 1's bound, as the pass will read it
    await woke;
    // What is left of the pass after the freeze is one write, if any: done once the next scan starts.
    const scansAtWake = scans;
    await waitFor(() => scans > scansAtWake, 10_000, { message: 'the frozen pass ended (the next scan started)' });
    return rig.redis.zscore(jobKeys.deadline(), id);
  }

  it('between attempts: the pass read RETRYING, then attempt 2 went out with its bound; the resumed pass does not drop it', async () => {
    const id = await jobAfterAttempt1('dl-between', true);
    const bound = Date.now() + 10 * MAX_RUNTIME_MS;
    // Before: the resumed pass dropped the entry (RETRYING, no deadline_ms), so attempt 2 ran unbounded.
    expect(await passFrozenAt('getJob', id, bound)).toBe(String(bound));
  }, 30_000);

  it('an older bound (P104): the pass read attempt 1\'s entry as stale, then attempt 2 recorded its bound; the resumed pass does not move it back', async () => {
    const id = await jobAfterAttempt1('dl-p104', false);
    const bound = Date.now() + 10 * MAX_RUNTIME_MS;
    const ownOfAttempt1 = (await rig.store.getJob(id))!.dispatchedAt! + MAX_RUNTIME_MS;
    const left = await passFrozenAt('deadlineScore', id, bound);
    // Before: moved to attempt 1's own bound, ending attempt 2 that much earlier than its own.
    expect(left).not.toBe(String(ownOfAttempt1));
    expect(left).toBe(String(bound));
  }, 30_000);

  it('an attempt that started though its publish was never marked published still ends at max_runtime_ms (P175)', async () => {
    const id = `dl-unmarked-${process.pid}`;
    await rig.store.createJob({ id, tenant: 'acme', topic: 'job.deadline-lease', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const token = 'test-owner:2';
    await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
    // The publish left, but its flush failed (or the replica died) before the mark: published false.
    const dispatch = { dispatchId: `d1-${id}`, attempt: 1, published: false, subject: 'worker.gone.jobs', workerId: 'gone', startAck: true };
    const dispatchedAt = Date.now() - MAX_RUNTIME_MS - 1;
    expect((await rig.store.transition(id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, dispatchedAt, workerId: 'gone', maxRuntimeMs: MAX_RUNTIME_MS } })).ok).toBe(true);
    await rig.redis.del(jobKeys.lock(id));
    // The worker started it: its start ack moves the job to RUNNING.
    expect((await rig.store.markRunning(id, dispatch.dispatchId)).ok).toBe(true);
    await rig.redis.zadd(jobKeys.deadline(), dispatchedAt + MAX_RUNTIME_MS, id); // the bound the publish recorded, due
    await waitFor(async () => (await rig.store.getJob(id))?.state === 'TIMEOUT', 5_000, { message: 'TIMEOUT at its max_runtime_ms' });
    expect((await rig.store.getJob(id))?.error?.code).toBe('max_runtime_exceeded');
  }, 30_000);

  it('with its lease safe, the pass still writes: an entry for a job between attempts goes (no deadline_ms)', async () => {
    const id = await jobAfterAttempt1('dl-safe', true);
    await rig.redis.zadd(jobKeys.deadline(), Date.now() - 1, id);
    await waitFor(async () => (await rig.redis.zscore(jobKeys.deadline(), id)) === null, 5_000, { message: 'entry dropped by the pass' });
  }, 30_000);
});
