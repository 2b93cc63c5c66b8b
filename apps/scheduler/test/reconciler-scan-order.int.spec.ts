// The reconciler's DISPATCHED pass reads the SCAN_LIMIT oldest due entries. A start-ack attempt
// that provably never started but has no worker to go to (P31) is left DISPATCHED for the next
// scan, bounded by the no-worker wait (D13, 10 min); its entry kept its place, so SCAN_LIMIT such
// jobs hid every job due behind them for that long, an unpublished attempt whose owner died (D2:
// republished at the dispatch timeout) among them. A visit that leaves a job as it was now moves
// its entry behind the others due, still due: the next scan reaches the rest, and the waiting
// jobs are still retried every scan. In process against real Redis + NATS; SCAN_LIMIT is 3 here
// (the `wrapStore` seam caps the pass's list), the jobs are written as a dead replica left them.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jobKeys, type JobStore } from '@cordum/job-store';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const SCAN_LIMIT = 3;
const DISPATCH_TIMEOUT_MS = 3_000;

describe('reconciler: jobs left waiting for a worker do not hide the jobs due behind them (P31, D2, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  const workers: TestWorker[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'scan-order-'));
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    listActive: (state, before, limit) => s.listActive(state, before, state === 'DISPATCHED' ? Math.min(limit, SCAN_LIMIT) : limit),
  });

  beforeAll(async () => {
    kernel = await startTestKernel([]);
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, `reconciler:\n  dispatch_timeout_seconds: ${DISPATCH_TIMEOUT_MS / 1000}\n  running_timeout_seconds: 60\n  scan_interval_seconds: 0.2\n`);
    rig = await startSchedulerRig({ instanceId: 'sched-scan-order', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts, SCHEDULER_DISPATCH_VERIFY_DELAY: '60s', SCHEDULER_REPLAY_INTERVAL: '60s' }, deps: { wrapStore } });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  async function worker(id: string, topics: string[]): Promise<TestWorker> {
    const w = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id, topics, replyFor: () => 'succeed' });
    workers.push(w);
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === id && v.readyTopics.length > 0), 10_000, { message: `${id} registered` });
    return w;
  }
  /** Attempt 1 recorded DISPATCHED by a replica that died: published to `workerId` or not. */
  async function dispatchedBy(id: string, topic: string, workerId: string, published: boolean): Promise<void> {
    await rig.store.createJob({ id, tenant: 'acme', topic, traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const token = 'dead-replica:1';
    await rig.redis.set(jobKeys.lock(id), token, 'PX', 10_000);
    const dispatch = { dispatchId: `d1-${id}`, attempt: 1, published, subject: `worker.${workerId}.jobs`, workerId, startAck: true };
    const w = await rig.store.transition(id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, dispatchedAt: Date.now(), workerId } });
    expect(w.ok).toBe(true);
    await rig.redis.del(jobKeys.lock(id));
  }

  it('an unpublished attempt due behind SCAN_LIMIT jobs with no worker is republished at its dispatch timeout; the waiting jobs go as soon as a worker comes', async () => {
    const waiting = [1, 2, 3].map((n) => `scan-nowhere-${process.pid}-${n}`);
    // Sent to a start-ack worker that is gone, never claimed; nobody else serves the topic.
    for (const id of waiting) await dispatchedBy(id, 'job.nowhere', 'gone', true);
    const x = await worker('tw-x', ['job.x']);
    const orphan = `scan-orphan-${process.pid}`;
    await dispatchedBy(orphan, 'job.x', 'tw-x', false); // its owner died before the publish (D2)
    // Before: each scan read the three waiting jobs only, for up to the 10 min no-worker bound.
    await waitFor(async () => (await rig.store.getJob(orphan))?.state === 'SUCCEEDED', DISPATCH_TIMEOUT_MS + 5_000, { message: 'the unpublished attempt republished and run' });
    expect(x.count(orphan)).toBe(1);
    expect(x.executions.get(orphan)?.[0]?.request.dispatch?.dispatchId).toBe(`d1-${orphan}`);
    for (const id of waiting) expect(await rig.store.getJob(id)).toMatchObject({ state: 'DISPATCHED', attempts: 1 });
    // A worker for them: each is retried by the next scan (P31), not a dispatch timeout later.
    const w = await worker('tw-nowhere', ['job.nowhere']);
    const came = Date.now();
    await waitFor(async () => (await Promise.all(waiting.map((id) => rig.store.getJob(id)))).every((j) => j?.state === 'SUCCEEDED'), 10_000, { message: 'the waiting jobs redispatched' });
    // redispatched (the scheduler's dispatch time: not the runs and results) well before a dispatch timeout
    const redispatched = await Promise.all(waiting.map(async (id) => (await rig.store.getJob(id))!));
    expect(Math.max(...redispatched.map((j) => j.dispatchedAt!)) - came).toBeLessThan(DISPATCH_TIMEOUT_MS - 1_000);
    for (const j of redispatched) expect(j).toMatchObject({ attempts: 2 });
    expect(waiting.map((id) => w.count(id))).toEqual([1, 1, 1]);
  }, 40_000);
});
