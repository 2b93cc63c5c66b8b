// P70 hand-off, in process against real Redis + NATS: a result, a cancel or a reconciler
// timeout that frees a concurrency slot drives the group's next waiter at once. The replayer
// leader's turn is 60 s apart here, so nothing else can have woken the waiters within the test.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import { jobKeys, type JobRecord, type NewJob } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { create, Decision, encodePacket, JobCancelSchema, JobRequestSchema, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

describe('slot hand-off (P70, in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  let seq = 0;
  const tmp = mkdtempSync(join(tmpdir(), 'slots-'));

  beforeAll(async () => {
    // A job labelled runtime=short may run 800 ms (P65); every job of the rule runs one at a time.
    kernel = await startTestKernel((req) => ({
      decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'one', policySnapshot: 'snap-test',
      constraints: { maxConcurrentJobs: 1, ...(req.labels['runtime'] === 'short' ? { maxRuntimeMs: 800n } : {}) },
    }));
    // The reconciler looks every 0.3 s, so a timeout's hand-off is not held behind a 30 s scan.
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 30\n  running_timeout_seconds: 30\n  scan_interval_seconds: 0.3\n');
    rig = await startSchedulerRig({ instanceId: 'sched-slots', kernelAddress: kernel.address, env: { SCHEDULER_REPLAY_INTERVAL: '60s', TIMEOUT_CONFIG_PATH: timeouts } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-one', topics: ['job.one'], replyFor: () => 'none' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-one' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  async function submit(over: Partial<NewJob> = {}): Promise<JobRecord> {
    seq += 1;
    const j: NewJob = {
      id: `slot-${process.pid}-${seq}`, tenant: 'acme', topic: 'job.one', traceId: `trace-${seq}`, priority: 'batch', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'PENDING', ...over,
    };
    const job = await rig.store.createJob(j);
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${job.id}:0:0` });
    return job;
  }
  const counter = async (name: string): Promise<number> => (await rig.metrics.getSingleMetric(name)?.get())?.values.reduce((a, v) => a + v.value, 0) ?? 0;

  it('each result that frees the slot dispatches the longest waiter at once, without the leader', async () => {
    const group = 'acme/one';
    const jobs: JobRecord[] = [];
    for (let i = 0; i < 4; i += 1) jobs.push(await submit());
    await waitFor(async () => worker.executions.size === 1 && (await rig.redis.zcard(jobKeys.slotWaiters(group))) === 3, 10_000, { message: 'one out, three queued' });
    const queue = await rig.redis.zrange(jobKeys.slotWaiters(group), '0', '-1');
    let out = [...worker.executions.keys()][0] as string;
    for (const next of queue) {
      const req = worker.executions.get(out)?.[0]?.request;
      if (!req) throw new Error(`no dispatch of ${out}`);
      await worker.reply(req, JobStatus.SUCCEEDED);
      await waitFor(() => worker.count(next) === 1, 10_000, { message: `${next} handed the slot` });
      expect(worker.executions.size).toBe(queue.indexOf(next) + 2);
      out = next;
    }
    const last = worker.executions.get(out)?.[0]?.request;
    if (!last) throw new Error(`no dispatch of ${out}`);
    await worker.reply(last, JobStatus.SUCCEEDED);
    await waitFor(async () => (await Promise.all(jobs.map((j) => rig.store.getJob(j.id)))).every((j) => j?.state === 'SUCCEEDED'), 10_000, { message: 'all SUCCEEDED' });
    // Counted once the hand-off's drive returns, which can be after the handed job ran.
    await waitFor(async () => (await counter('cordum_scheduler_slot_hand_offs_total')) >= 3, 5_000, { message: 'three hand-offs counted' });
    expect(await counter('cordum_scheduler_slot_hand_offs_total')).toBe(3);
    expect(await counter('cordum_scheduler_slot_wakes_total')).toBe(0);
    for (const j of jobs) expect(worker.count(j.id)).toBe(1);
  });

  it('a bus cancel, a max_runtime timeout, the gateway\'s cancel and a bus cancel between attempts hand the slot on at once too; a cancelled waiter hands nothing', async () => {
    const group = 'beta/one';
    const waiters = async (): Promise<string[]> => rig.redis.zrange(jobKeys.slotWaiters(group), '0', '-1');
    const handOffs = await counter('cordum_scheduler_slot_hand_offs_total');
    const a = await submit({ tenant: 'beta' });
    await waitFor(() => worker.count(a.id) === 1, 10_000, { message: 'A out' });
    const queued = async (over: Partial<NewJob> = {}): Promise<JobRecord> => {
      const j = await submit({ tenant: 'beta', ...over });
      await waitFor(async () => (await waiters()).includes(j.id), 10_000, { message: `${j.id} queued` });
      return j;
    };
    const b = await queued({ labels: { runtime: 'short' } });
    const c = await queued();
    const e = await queued();
    const f = await queued();
    const d = await queued();
    const publishCancel = (id: string): Promise<unknown> => rig.bus.publish(subjects.cancel, encodePacket(newPacket('gateway-test', { case: 'jobCancel', value: create(JobCancelSchema, { jobId: id, reason: 'not needed', requestedBy: 'tester' }) })));
    // D, a waiter, is cancelled the gateway's way: its place in the queue goes, no slot is handed on.
    const locks = createLocks(rig.redis);
    const cancelAsGateway = async (id: string): Promise<void> => {
      const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'gateway-test', waitMs: 2_000 });
      if (!lease) throw new Error(`lock ${id}`);
      const w = await rig.store.transition(id, 'CANCELLED', { token: lease.token, patch: { error: { code: 'cancelled', message: 'not needed' } } });
      await lease.release();
      if (!w.ok) throw new Error(`cancel ${id}: ${w.reason}`);
      await publishCancel(id);
    };
    await cancelAsGateway(d.id);
    await waitFor(async () => (await waiters()).length === 4, 10_000, { message: 'D left the queue' });
    // A is cancelled on the bus alone (the scheduler writes CANCELLED): B goes out at once.
    await publishCancel(a.id);
    await waitFor(() => worker.count(b.id) === 1, 10_000, { message: 'B handed the slot by the bus cancel' });
    expect(await rig.store.getJob(a.id)).toMatchObject({ state: 'CANCELLED' });
    expect(worker.count(c.id)).toBe(0);
    // B never answers: its 800 ms run out, the reconciler ends it TIMEOUT and C goes out at once.
    await waitFor(() => worker.count(c.id) === 1, 10_000, { message: 'C handed the slot by the timeout' });
    expect((await rig.store.getJob(b.id))?.error?.code).toBe('max_runtime_exceeded');
    expect(worker.count(e.id)).toBe(0);
    // C is cancelled the gateway's way (CANCELLED, then the JobCancel): E goes out at once.
    await cancelAsGateway(c.id);
    await waitFor(() => worker.count(e.id) === 1, 10_000, { message: 'E handed the slot by the gateway\'s cancel' });
    // E's worker refuses it busy (D48): RETRYING between attempts, still holding the slot. A bus
    // cancel then ends it with no JobCancel of its own (no attempt is out), and F goes out at once.
    const toE = worker.executions.get(e.id)?.[0]?.request;
    if (!toE) throw new Error('no dispatch of E');
    await rig.bus.publish(subjects.result, encodePacket(newPacket(worker.id, { case: 'jobResult', value: create(JobResultSchema, { jobId: e.id, status: JobStatus.FAILED_RETRYABLE, workerId: worker.id, errorCode: 'worker_busy', dispatch: toE.dispatch }) })), { msgId: `busy:${e.id}` });
    await waitFor(async () => (await rig.store.getJob(e.id))?.state === 'RETRYING', 10_000, { message: 'E RETRYING' });
    expect(worker.count(f.id)).toBe(0);
    await publishCancel(e.id);
    await waitFor(() => worker.count(f.id) === 1, 10_000, { message: 'F handed the slot by the bus cancel between attempts' });
    const toF = worker.executions.get(f.id)?.[0]?.request;
    if (!toF) throw new Error('no dispatch of F');
    await worker.reply(toF, JobStatus.SUCCEEDED);
    await waitFor(async () => (await rig.store.getJob(f.id))?.state === 'SUCCEEDED', 10_000, { message: 'F SUCCEEDED' });
    await waitFor(async () => (await counter('cordum_scheduler_slot_hand_offs_total')) >= handOffs + 4, 5_000, { message: 'four more hand-offs counted' });
    expect(await counter('cordum_scheduler_slot_hand_offs_total')).toBe(handOffs + 4);
    expect(await counter('cordum_scheduler_slot_wakes_total')).toBe(0);
    expect([a, b, c, d, e, f].map((j) => worker.count(j.id))).toEqual([1, 1, 1, 0, 1, 1]);
    expect(await waiters()).toEqual([]);
  });
});
