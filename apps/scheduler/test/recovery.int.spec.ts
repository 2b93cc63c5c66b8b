import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects, type Bus } from '@cordum/bus';
import { jobKeys, jobToApi, MAX_ERROR_CODE_CHARS, MAX_ERROR_MESSAGE_CHARS, readWorkerSnapshot, type JobRecord, type JobStore, type NewJob } from '@cordum/job-store';
import { create, Decision, decodePacket, encodePacket, JobCancelSchema, JobRequestSchema, JobResultSchema, JobStatus, newPacket, type MessageInitShape } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { callsOf, commandCalls, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import type { SchedulerConfig } from '../src/config';
import type { TimeoutsConfig } from '../src/routing-config';
import { QUEUE } from '../src/context';
import { createScheduler, type Scheduler } from '../src/scheduler';
import { startGhost, type Ghost } from './ghost';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

// Reconciler, pending replayer, delivery verification and warm start, in
// process against real Redis + NATS, with short timeouts from a temp
// TIMEOUT_CONFIG_PATH (dispatch 3 s, running 3 s, scan 0.3 s) and a 1 s verify delay.
// Each test uses its own topic, so routing never mixes their workers.
const SLOW_CHECK_MS = 500;

describe('scheduler recovery loops (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let natsServer: TestServer;
  let redis: RedisClient;
  let bus: Bus;
  let store: JobStore;
  let kernel: TestKernel;
  let scheduler: Scheduler;
  let config: SchedulerConfig;
  let metrics: Registry;
  const tmp = mkdtempSync(join(tmpdir(), 'sched-rec-'));
  const workers: TestWorker[] = [];
  const ghosts: Ghost[] = [];
  let seq = 0;
  /** Jobs whose result handler fails once right after its RETRYING write (a Redis error after the write, P41). */
  const failAfterRetryWriteOnce = new Set<string>();
  /** claim-2.lua as worker-sdk runs it; claimAs answers its verdict (1 = claimed: the worker runs the job). */
  const claimLua = readFileSync(join(__dirname, '../../../libs/worker-sdk/src/lua/claim-2.lua'), 'utf8');
  async function claimAs(workerId: string, jobId: string): Promise<number> {
    const d = (await store.getJob(jobId))?.dispatch;
    if (!d) throw new Error(`no dispatch on ${jobId}`);
    return Number(await redis.eval(claimLua, 2, jobKeys.workerClaim(jobId), jobKeys.meta(jobId), d.attempt, d.dispatchId, workerId, 60_000));
  }
  /** P49: jobs a worker claims right after the reconciler read their claim, or right after its fence; the verdicts. */
  const claimAfterRead = new Map<string, number>();
  const claimAfterFence = new Map<string, number>();
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async claimedDispatch(id) {
      const seen = await s.claimedDispatch(id);
      if (claimAfterRead.get(id) === 0) claimAfterRead.set(id, await claimAs('race-ghost', id));
      return seen;
    },
    async fenceClaim(id, dispatchId, attempt) {
      const fenced = await s.fenceClaim(id, dispatchId, attempt);
      if (claimAfterFence.get(id) === 0) claimAfterFence.set(id, await claimAs('race-ghost', id));
      return fenced;
    },
    async transition(id, to, o) {
      const w = await s.transition(id, to, o);
      if (to === 'RETRYING' && failAfterRetryWriteOnce.delete(id)) throw new Error('injected: the handler failed after its RETRYING write');
      return w;
    },
  });

  beforeAll(async () => {
    // Allows everything; answers Checks of job.rq only after SLOW_CHECK_MS (the P35 backlog).
    kernel = await startTestKernel(async (req) => {
      if (req.topic === 'job.rq') await new Promise((r) => setTimeout(r, SLOW_CHECK_MS));
      if (req.topic === 'job.conc') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'two at a time', ruleId: 'cap-conc', policySnapshot: 'snap-test', constraints: { maxConcurrentJobs: 2 } };
      if (req.topic === 'job.concA' || req.topic === 'job.concB') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'cap-shared', policySnapshot: 'snap-test', constraints: { maxConcurrentJobs: 1 } };
      if (req.topic === 'job.small') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'small outputs', ruleId: 'cap-output', policySnapshot: 'snap-test', constraints: { maxArtifactBytes: 100n } };
      if (req.topic === 'job.concS') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'cap-sweep', policySnapshot: 'snap-test', constraints: { maxConcurrentJobs: 1 } };
      if (req.topic === 'job.conc1') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one at a time', ruleId: 'cap-one', policySnapshot: 'snap-test', constraints: { maxConcurrentJobs: 1 } };
      if (req.topic === 'job.artifacts1') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'one attempt', ruleId: 'cap-once', policySnapshot: 'snap-test', constraints: { maxRetries: 1 } };
      if (req.topic === 'job.capped') return { decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'capped', ruleId: 'cap-runtime', policySnapshot: 'snap-test', constraints: { maxRuntimeMs: 1_000n } };
      return { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' };
    });
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 3\n  running_timeout_seconds: 3\n  scan_interval_seconds: 0.3\n');
    rig = await startSchedulerRig({
      instanceId: 'sched-rec',
      kernelAddress: kernel.address,
      env: {
        TIMEOUT_CONFIG_PATH: timeouts,
        SCHEDULER_DISPATCH_VERIFY_DELAY: '1s',
        SCHEDULER_REPLAY_INTERVAL: '200ms',
        SCHEDULER_PENDING_REPLAY_AGE: '1s',
        SCHEDULER_SCHEDULE_MAX_TRIES: '2',
        WORKER_SNAPSHOT_INTERVAL: '200ms',
      },
      deps: { wrapStore },
    });
    ({ natsServer, redis, store, scheduler, config, metrics, bus } = rig);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...workers.map((w) => w.stop()), ...ghosts.map((g) => g.stop())]);
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  function newJob(topic: string, over: Partial<NewJob> = {}): NewJob {
    seq += 1;
    return {
      id: `rec-${process.pid}-${seq}`, tenant: 'acme', topic, traceId: `trace-${seq}`, priority: 'batch', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'PENDING', ...over,
    };
  }
  async function submit(topic: string, over: Partial<NewJob> = {}): Promise<JobRecord> {
    const job = await store.createJob(newJob(topic, over));
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${job.id}:0:0` });
    return job;
  }
  async function worker(id: string, topics: string[], reply: 'succeed' | 'none' | 'silent' = 'succeed'): Promise<TestWorker> {
    const w = await startTestWorker({ natsUrl: natsServer.url, redis, id, topics, replyFor: () => reply });
    workers.push(w);
    await waitFor(() => scheduler.workers.live().some((v) => v.workerId === id && v.readyTopics.length > 0), 10_000, { message: `${id} registered` });
    return w;
  }
  async function ghost(id: string, topics: string[], startAck: boolean): Promise<Ghost> {
    const g = await startGhost({ natsUrl: natsServer.url, id, topics, startAck });
    ghosts.push(g);
    await waitFor(() => scheduler.workers.live().some((v) => v.workerId === id && v.readyTopics.length > 0), 10_000, { message: `${id} registered` });
    return g;
  }
  const stateOf = async (id: string) => (await store.getJob(id))?.state;
  /** Runs `fn` with these reconciler timeouts, then puts back the suite's (dispatch 3 s, running 3 s, scan 0.3 s). */
  async function withTimeouts(reconciler: TimeoutsConfig['reconciler'], fn: () => Promise<void>): Promise<void> {
    scheduler.setTimeouts({ reconciler });
    try {
      await fn();
    } finally {
      scheduler.setTimeouts(config.timeouts);
    }
  }
  /** Timeouts that never fire during a test that holds jobs RUNNING on purpose; scans stay fast. */
  const LONG_TIMEOUTS: TimeoutsConfig['reconciler'] = { dispatch_timeout_seconds: 60, running_timeout_seconds: 60, scan_interval_seconds: 0.3 };
  /** A worker's result packet on the bus, as a CAP worker sends it. */
  async function publishResult(from: string, value: MessageInitShape<typeof JobResultSchema>, msgId: string): Promise<void> {
    await bus.publish(subjects.result, encodePacket(newPacket(from, { case: 'jobResult', value: create(JobResultSchema, value) })), { msgId });
  }
  /** The request of the `n`th dispatch `w` received for the job (1-based). */
  function nthRequest(w: TestWorker, jobId: string, n: number) {
    const req = w.executions.get(jobId)?.[n - 1]?.request;
    if (!req) throw new Error(`no dispatch ${n} of ${jobId}`);
    return req;
  }
  /** Waits for dispatch `n` and refuses it as a worker at capacity does (D48). */
  async function refuseBusy(w: TestWorker, jobId: string, n: number): Promise<void> {
    await waitFor(() => w.count(jobId) === n, 15_000, { message: `dispatch ${n}` });
    await publishResult(w.id, { jobId, status: JobStatus.FAILED_RETRYABLE, workerId: w.id, errorCode: 'worker_busy', dispatch: nthRequest(w, jobId, n).dispatch }, `busy:${jobId}:${n}`);
  }
  async function counter(name: string, label: string, value: string): Promise<number> {
    const m = await metrics.getSingleMetric(name)?.get();
    return m?.values.filter((v) => v.labels[label] === value).reduce((a, v) => a + v.value, 0) ?? 0;
  }

  it('P83: an attempt whose publish failed (recorded DISPATCHED, unpublished, filed for retry) goes out again from the replayer, same dispatch id, not at the dispatch timeout', async () => {
    const w = await worker('tw-repub', ['job.repub']);
    const republishedBefore = await counter('cordum_scheduler_reconciled_total', 'action', 'republish');
    // What publishAttempt leaves when NATS drops the connection mid-flush on a drive with no
    // message behind it (a parked job woken by the replayer): DISPATCHED, published false, a retry.
    const job = await store.createJob(newJob('job.repub'));
    const token = 'dead-drive:1';
    await redis.set(jobKeys.lock(job.id), token, 'PX', 10_000);
    const dispatch = { dispatchId: `d-${job.id}`, attempt: 1, published: false, subject: 'worker.tw-repub.jobs', workerId: 'tw-repub' };
    const wr = await store.transition(job.id, 'DISPATCHED', { token, from: ['PENDING'], via: 'SCHEDULED', patch: { dispatch, attempts: 1, dispatchedAt: Date.now(), workerId: 'tw-repub' } });
    expect(wr.ok).toBe(true);
    await redis.del(jobKeys.lock(job.id));
    await store.scheduleRetry(job.id, Date.now());
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'republished attempt ran' });
    expect(w.count(job.id)).toBe(1);
    expect(w.executions.get(job.id)?.[0]?.request.dispatch?.dispatchId).toBe(dispatch.dispatchId);
    expect((await store.getJob(job.id))?.attempts).toBe(1);
    // The replayer sent it, not the reconciler's dispatch timeout (3 s in this suite).
    expect(await counter('cordum_scheduler_reconciled_total', 'action', 'republish')).toBe(republishedBefore);
  });

  it('verification fallback: a dispatch to a start-ack worker that never received it is redispatched elsewhere and counted', async () => {
    // 'a-ghost' wins the routing tie-break, so the first attempt goes to the dead worker.
    await ghost('a-ghost', ['job.ra'], true);
    const live = await worker('tw-a', ['job.ra']);
    const before = await counter('cordum_dispatch_verify_total', 'outcome', 'fallback');
    const redispatchedBefore = await counter('cordum_scheduler_reconciled_total', 'action', 'redispatch');
    const job = await submit('job.ra');
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'job SUCCEEDED after fallback' });
    // verify delay (1 s) + one dispatch, before the 3 s dispatch timeout (the scheduler's own
    // timestamps: the run, the result and this test's polling are not in it), and not by the reconciler
    const done = await store.getJob(job.id);
    expect(done!.dispatchedAt! - done!.createdAt).toBeLessThan(3_000);
    expect(await counter('cordum_scheduler_reconciled_total', 'action', 'redispatch')).toBe(redispatchedBefore);
    expect(done).toMatchObject({ attempts: 2, workerId: 'tw-a', dispatch: { attempt: 2, workerId: 'tw-a' } });
    expect(live.count(job.id)).toBe(1);
    await waitFor(async () => (await counter('cordum_dispatch_verify_total', 'outcome', 'fallback')) > before, 5_000, { message: 'fallback counted' });
  });

  it('P34: after a fallback, new jobs go around the worker that did not claim its dispatch, though it keeps heartbeating', async () => {
    // 'a-ghost-p34' wins every routing tie and heartbeats every 100 ms, but nothing sent to it arrives.
    await ghost('a-ghost-p34', ['job.rp'], true);
    const live = await worker('tw-p34', ['job.rp']);
    const first = await submit('job.rp');
    await waitFor(async () => (await stateOf(first.id)) === 'SUCCEEDED', 10_000, { message: 'first job SUCCEEDED after fallback' });
    expect(await store.getJob(first.id)).toMatchObject({ attempts: 2, workerId: 'tw-p34' });
    // counted by the gauge, with any ghost an earlier test left marked, and only those
    const marked = scheduler.workers.live().filter((w) => scheduler.workers.unresponsive(w)).map((w) => w.workerId);
    expect(marked).toContain('a-ghost-p34');
    expect(marked).not.toContain('tw-p34');
    expect((await metrics.getSingleMetric('cordum_scheduler_workers_unclaimed')?.get())?.values[0]?.value).toBe(marked.length);
    // Without the mark each of these went to the ghost first and waited out the verify delay.
    const next: JobRecord[] = [];
    for (let i = 0; i < 5; i++) {
      const job = await submit('job.rp');
      next.push(job);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: `job ${i} SUCCEEDED` });
    }
    const done = await Promise.all(next.map(async (j) => (await store.getJob(j.id))!));
    expect(done.map((j) => j.workerId)).toEqual(next.map(() => 'tw-p34'));
    // Every attempt reached tw-p34, none went to the ghost first (that one would be missing here).
    // Usually one each; a jest worker stalled ~1 s between a dispatch and reading tw-p34's start
    // ack (this test worker claims nothing) lets the 1 s probe send it again, to tw-p34 once more.
    for (const j of done) {
      const ids = (live.executions.get(j.id) ?? []).map((e) => e.request.dispatch?.dispatchId);
      expect({ attempts: j.attempts, distinct: new Set(ids).size, last: ids.at(-1) }).toEqual({ attempts: ids.length, distinct: ids.length, last: j.dispatch?.dispatchId });
    }
  });

  it('a lost dispatch whose probe finds no free worker is probed again and redispatched once one frees, long before the dispatch timeout', async () => {
    // Seen on a 3-node NATS cluster whose node carrying a worker's connection died: the dispatch
    // was lost, and at the probe every worker was saturated by the backlog, so the job waited for
    // the 120 s dispatch timeout instead of the next free slot.
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const g = await ghost('a-ghost-full', ['job.rv'], true);
      const before = { deferred: await counter('cordum_dispatch_verify_total', 'outcome', 'deferred'), fallback: await counter('cordum_dispatch_verify_total', 'outcome', 'fallback') };
      const job = await submit('job.rv');
      await waitFor(async () => (await store.getJob(job.id))?.dispatch?.workerId === 'a-ghost-full', 5_000, { message: 'dispatched to the ghost' });
      g.setActiveJobs(100); // saturated, and no other worker serves the topic: no route at the probe
      await waitFor(async () => (await counter('cordum_dispatch_verify_total', 'outcome', 'deferred')) > before.deferred, 5_000, { message: 'probe deferred' });
      expect(await store.getJob(job.id)).toMatchObject({ state: 'DISPATCHED', attempts: 1 });
      const live = await worker('tw-v', ['job.rv']);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED after the next probe' });
      expect(await store.getJob(job.id)).toMatchObject({ attempts: 2, workerId: 'tw-v' });
      expect(live.count(job.id)).toBe(1);
      expect((await counter('cordum_dispatch_verify_total', 'outcome', 'fallback')) - before.fallback).toBe(1);
    });
  });

  it('a probe that finds no free worker is not deferred past the dispatch timeout: the reconciler retries the job from there', async () => {
    // dispatch timeout 1.5 s: the probe at 1 s could only be repeated at 2 s, past it
    await withTimeouts({ dispatch_timeout_seconds: 1.5, running_timeout_seconds: 60, scan_interval_seconds: 0.3 }, async () => {
      const g = await ghost('a-ghost-late', ['job.rw'], true);
      const outcomes = async () => ({ deferred: await counter('cordum_dispatch_verify_total', 'outcome', 'deferred'), unverified: await counter('cordum_dispatch_verify_total', 'outcome', 'unverified') });
      const before = await outcomes();
      const redispatchedBefore = await counter('cordum_scheduler_reconciled_total', 'action', 'redispatch');
      const job = await submit('job.rw');
      await waitFor(async () => (await store.getJob(job.id))?.dispatch?.workerId === 'a-ghost-late', 5_000, { message: 'dispatched to the ghost' });
      g.setActiveJobs(100);
      await waitFor(async () => (await outcomes()).unverified > before.unverified, 5_000, { message: 'probe unverified' });
      expect((await outcomes()).deferred).toBe(before.deferred);
      await worker('tw-w', ['job.rw']);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED by the reconciler' });
      // counted once the redispatch call returns, which a busy machine may run after the result
      await waitFor(async () => (await counter('cordum_scheduler_reconciled_total', 'action', 'redispatch')) > redispatchedBefore, 5_000, { message: 'redispatch counted' });
      expect(await counter('cordum_scheduler_reconciled_total', 'action', 'redispatch')).toBe(redispatchedBefore + 1);
    });
  });

  it('a dispatch its worker answers is counted delivered when the answer arrives and is never probed', async () => {
    await worker('tw-dl', ['job.rdl']);
    const before = await counter('cordum_dispatch_verify_total', 'outcome', 'delivered');
    const job = await submit('job.rdl');
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'job SUCCEEDED' });
    // The test's own read can see SUCCEEDED before the scheduler has handled the finish reply that
    // counts the dispatch, so wait for the count (well inside the 1 s verify delay: without the
    // answer the probe would still be waiting on the wheel).
    await waitFor(async () => (await counter('cordum_dispatch_verify_total', 'outcome', 'delivered')) - before >= 1, 500, { message: 'delivered counted' });
    expect({ pending: scheduler.verifier.pending(job.id), delivered: (await counter('cordum_dispatch_verify_total', 'outcome', 'delivered')) - before }).toEqual({ pending: false, delivered: 1 });
  });

  it('a result packet of another protocol version is never applied: terminated after 3 deliveries and counted (CONTRACT §3)', async () => {
    await ghost('pv-ghost', ['job.rpv'], false);
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const job = await submit('job.rpv');
      await waitFor(async () => (await store.getJob(job.id))?.dispatch?.published === true, 5_000, { message: 'published' });
      const d = (await store.getJob(job.id))?.dispatch;
      const result = { jobId: job.id, status: JobStatus.SUCCEEDED, workerId: 'pv-ghost', dispatch: { dispatchId: d?.dispatchId ?? '', attempt: 1n } };
      const before = await counter('cordum_bus_undecodable_total', 'subject', subjects.result);
      const future = newPacket('pv-ghost', { case: 'jobResult', value: create(JobResultSchema, result) });
      future.protocolVersion = 2;
      await bus.publish(subjects.result, encodePacket(future), { msgId: `pv2:${job.id}` });
      await waitFor(async () => (await counter('cordum_bus_undecodable_total', 'subject', subjects.result)) > before, 5_000, { message: 'version 2 terminated' });
      expect(await stateOf(job.id)).toBe('DISPATCHED');
      // the same result as version 1 is applied
      await publishResult('pv-ghost', result, `pv1:${job.id}`);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 5_000, { message: 'version 1 applied' });
    });
  });

  it('a silent worker without start acks is never redispatched: unverified, then TIMEOUT + DLQ at the dispatch timeout (D1)', async () => {
    await ghost('b-ghost', ['job.rb'], false);
    const before = await counter('cordum_dispatch_verify_total', 'outcome', 'unverified');
    const job = await submit('job.rb');
    await waitFor(async () => (await counter('cordum_dispatch_verify_total', 'outcome', 'unverified')) > before, 10_000, { message: 'unverified counted' });
    expect(await stateOf(job.id)).toBe('DISPATCHED');
    await waitFor(async () => (await stateOf(job.id)) === 'TIMEOUT', 10_000, { message: 'job TIMEOUT' });
    expect(await store.getJob(job.id)).toMatchObject({ attempts: 1, error: { code: 'dispatch_timeout' } });
    // the DLQ entry follows the terminal write (D14), and the index move follows the entry (P38):
    // each is a write of its own after the state, so wait for each rather than read it once
    expect(await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry (written just after the state)' })).toMatchObject({ reason_code: 'dispatch_timeout', last_state: 'TIMEOUT' });
    await waitFor(async () => (await redis.zscore(jobKeys.active('DISPATCHED'), job.id)) === null, 5_000, { message: 'out of job:active:DISPATCHED' });
  });

  it('an attempt a worker claimed is not redispatched even without its ack: it becomes RUNNING, then times out', async () => {
    await ghost('c-ghost', ['job.rc'], true);
    await worker('tw-c', ['job.rc']); // an alternative the fallback would pick
    const job = await submit('job.rc');
    await waitFor(async () => (await store.getJob(job.id))?.dispatch?.published === true, 5_000, { message: 'published' });
    const d = (await store.getJob(job.id))?.dispatch;
    // what worker-sdk's claim-2.lua writes when it admits the dispatch
    await redis.hset(jobKeys.workerClaim(job.id), 'attempt', '1', 'dispatch_id', d?.dispatchId ?? '', 'worker_id', 'c-ghost');
    await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 10_000, { message: 'claimed attempt counted as started' });
    expect((await store.getJob(job.id))?.attempts).toBe(1);
    await waitFor(async () => (await stateOf(job.id)) === 'TIMEOUT', 10_000, { message: 'running timeout' });
    expect(await store.getJob(job.id)).toMatchObject({ attempts: 1, error: { code: 'running_timeout' } });
    expect(workers.find((w) => w.id === 'tw-c')?.count(job.id)).toBe(0);
  });

  it('a worker claim between the reconciler\'s claim read and its TIMEOUT is found by the fence: RUNNING, not "not started" (P49)', async () => {
    await ghost('race-ghost', ['job.rz'], false);
    await withTimeouts({ dispatch_timeout_seconds: 2, running_timeout_seconds: 3600, scan_interval_seconds: 0.3 }, async () => {
      const ran = await submit('job.rz');
      claimAfterRead.set(ran.id, 0);
      const fenced = await submit('job.rz');
      claimAfterFence.set(fenced.id, 0);
      // claimed after the read: the worker runs it (verdict 1), so the job must be RUNNING
      await waitFor(async () => claimAfterRead.get(ran.id) !== 0 && (await stateOf(ran.id)) !== 'DISPATCHED', 10_000, { message: 'reconciled after the claim' });
      expect(claimAfterRead.get(ran.id)).toBe(1);
      expect(await store.getJob(ran.id)).toMatchObject({ state: 'RUNNING', attempts: 1 });
      // a claim after the fence is refused (stale), so the job that ends TIMEOUT never ran
      await waitFor(async () => (await stateOf(fenced.id)) === 'TIMEOUT', 10_000, { message: 'fenced job TIMEOUT' });
      expect(claimAfterFence.get(fenced.id)).toBe(-1);
      expect(await store.getJob(fenced.id)).toMatchObject({ attempts: 1, error: { code: 'dispatch_timeout' } });
      expect(await claimAs('race-ghost', fenced.id)).toBe(-3);
    });
  });

  it('a topic dispatch without start acks that a worker claimed becomes RUNNING at the dispatch timeout, so its late result still succeeds (P12)', async () => {
    // The worker's start ack was lost and its result is late (held by a replica that died until
    // JetStream redelivers it after AckWait): the claim proves the attempt started.
    await ghost('i-ghost', ['job.ri'], false);
    // a running timeout long enough that only the result can end the job once it is RUNNING
    await withTimeouts({ dispatch_timeout_seconds: 3, running_timeout_seconds: 3600, scan_interval_seconds: 0.3 }, async () => {
      const job = await submit('job.ri');
      await waitFor(async () => (await store.getJob(job.id))?.dispatch?.published === true, 5_000, { message: 'published' });
      const d = (await store.getJob(job.id))?.dispatch;
      expect(d).toMatchObject({ startAck: false, attempt: 1 });
      await redis.hset(jobKeys.workerClaim(job.id), 'attempt', '1', 'dispatch_id', d?.dispatchId ?? '', 'worker_id', 'i-ghost');
      const before = await counter('cordum_scheduler_reconciled_total', 'action', 'running');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 10_000, { message: 'claimed attempt counted as started' });
      // The reconciler counts after its transition returns (which also moves the indexes): the
      // state is visible in Redis a moment before the counter moves.
      await waitFor(async () => (await counter('cordum_scheduler_reconciled_total', 'action', 'running')) === before + 1, 5_000, { message: 'counted as reconciled to RUNNING' });
      await publishResult('i-ghost', { jobId: job.id, status: JobStatus.SUCCEEDED, workerId: 'i-ghost', dispatch: { dispatchId: d?.dispatchId ?? '', attempt: 1n } }, `sys.job.result:${job.id}:${d?.dispatchId ?? ''}`);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'late result applied' });
      expect(await store.getJob(job.id)).toMatchObject({ attempts: 1, dispatch: { dispatchId: d?.dispatchId } });
    });
  });

  it('an attempt out longer than the policy\'s max_runtime_ms ends TIMEOUT max_runtime_exceeded, never redispatched (P65)', async () => {
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const w = await worker('tw-cap', ['job.capped'], 'none');
      const before = await counter('cordum_scheduler_reconciled_total', 'action', 'max_runtime_exceeded');
      const stops: { jobId: string; dispatchId: string }[] = [];
      const sub = bus.subscribe(subjects.cancel, (data) => {
        const p = decodePacket(data);
        if (p.payload.case === 'jobCancel') stops.push({ jobId: p.payload.value.jobId, dispatchId: p.payload.value.dispatch?.dispatchId ?? '' });
      });
      await bus.flush();
      const job = await submit('job.capped');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 10_000, { message: 'capped job RUNNING' });
      expect((await store.getJob(job.id))?.maxRuntimeMs).toBe(1_000);
      const ended = await waitFor(async () => {
        const j = await store.getJob(job.id);
        return j?.state === 'TIMEOUT' ? j : undefined;
      }, 10_000, { message: 'capped job TIMEOUT' });
      expect(ended.error?.code).toBe('max_runtime_exceeded');
      expect(ended.error?.message).toContain('cap-runtime');
      // Bounded from its dispatch, not by the 60 s running timeout.
      expect((ended.finishedAt ?? 0) - (ended.dispatchedAt ?? 0)).toBeGreaterThanOrEqual(1_000);
      expect((ended.finishedAt ?? 0) - (ended.dispatchedAt ?? 0)).toBeLessThan(30_000);
      expect(w.count(job.id)).toBe(1);
      await waitFor(async () => (await counter('cordum_scheduler_reconciled_total', 'action', 'max_runtime_exceeded')) === before + 1, 5_000, { message: 'counted' });
      await waitFor(async () => (await redis.zscore(jobKeys.deadline(), job.id)) === null, 5_000, { message: 'out of job:deadline' });
      // Its worker is told to stop the attempt (a slot freed, not a result awaited).
      await waitFor(() => stops.some((c) => c.jobId === job.id), 5_000, { message: 'JobCancel for the timed-out attempt' });
      expect(stops.filter((c) => c.jobId === job.id)).toEqual([{ jobId: job.id, dispatchId: ended.dispatch?.dispatchId }]);
      sub.unsubscribe();
    });
  });

  it('a result over the decision\'s max_artifact_bytes ends FAILED artifact_too_large and its output is deleted; one within it succeeds (P71)', async () => {
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const w = await worker('tw-output', ['job.small', 'job.unbounded'], 'none');
      /** Answers the job's dispatch as a worker that stored a result of `resultBytes` and the given artifacts. */
      const answer = async (id: string, resultBytes: number, artifacts: Record<string, number> = {}): Promise<void> => {
        await waitFor(async () => w.count(id) === 1 && (await stateOf(id)) === 'RUNNING', 10_000, { message: `${id} RUNNING` });
        await redis.set(`res:${id}`, 'x'.repeat(resultBytes));
        for (const [key, n] of Object.entries(artifacts)) await redis.set(key, 'y'.repeat(n));
        const value = { jobId: id, status: JobStatus.SUCCEEDED, workerId: w.id, resultPtr: `redis://res:${id}`, artifactPtrs: Object.keys(artifacts).map((k) => `redis://${k}`), dispatch: nthRequest(w, id, 1).dispatch };
        await publishResult(w.id, value, `output:${id}`);
      };
      const ended = (id: string) =>
        waitFor(async () => {
          const j = await store.getJob(id);
          return j && (j.state === 'SUCCEEDED' || j.state === 'FAILED') ? j : undefined;
        }, 10_000, { message: `${id} ended` });

      const over = await submit('job.small');
      await answer(over.id, 101);
      const fits = await submit('job.small');
      await answer(fits.id, 60, { [`res:${fits.id}:a1`]: 40 });
      const overByArtifact = await submit('job.small');
      await answer(overByArtifact.id, 10, { [`res:${overByArtifact.id}:a1`]: 200 });
      // A worker that names keys that are not its job's: not measured, never deleted.
      const victim = await submit('job.unbounded');
      await waitFor(async () => (await stateOf(victim.id)) === 'RUNNING', 10_000, { message: 'victim RUNNING' });
      await redis.set(`other:${victim.id}`, 'z'.repeat(500));
      const poison = await submit('job.small');
      await waitFor(async () => w.count(poison.id) === 1 && (await stateOf(poison.id)) === 'RUNNING', 10_000, { message: 'poison RUNNING' });
      await redis.set(`res:${poison.id}`, 'x'.repeat(101));
      const foreign = [jobKeys.meta(victim.id), jobKeys.lock(victim.id), jobKeys.retry(), `other:${victim.id}`].map((k) => `redis://${k}`);
      await publishResult(w.id, { jobId: poison.id, status: JobStatus.SUCCEEDED, workerId: w.id, resultPtr: `redis://res:${poison.id}`, artifactPtrs: foreign, dispatch: nthRequest(w, poison.id, 1).dispatch }, `output:${poison.id}`);
      const unbounded = await submit('job.unbounded');
      await answer(unbounded.id, 5_000);

      const o = await ended(over.id);
      expect(o.state).toBe('FAILED');
      expect(o.maxArtifactBytes).toBe(100);
      expect(o.error?.code).toBe('artifact_too_large');
      expect(o.error?.message).toContain('101 bytes');
      expect(o.error?.message).toContain('cap-output');
      expect(o.resultPtr).toBeUndefined();
      // The output is dropped after the FAILED write has answered, which the test can see first.
      await waitFor(async () => (await redis.exists(`res:${over.id}`)) === 0, 5_000, { message: 'the oversized output dropped' });
      expect(await waitFor(() => store.getDlq(over.id), 5_000, { message: 'DLQ entry' })).toMatchObject({ reason_code: 'artifact_too_large' });

      const f = await ended(fits.id);
      expect(f.state).toBe('SUCCEEDED'); // 100 bytes: at the bound, not over it
      expect(await redis.exists(`res:${fits.id}`, `res:${fits.id}:a1`)).toBe(2);
      // The locked path's terminal write gives its artifact the job TTL too (D45).
      expect(await redis.pttl(`res:${fits.id}:a1`)).toBeGreaterThan(0);

      const a = await ended(overByArtifact.id);
      expect(a.state).toBe('FAILED');
      expect(a.error?.code).toBe('artifact_too_large');
      await waitFor(async () => (await redis.exists(`res:${overByArtifact.id}`, `res:${overByArtifact.id}:a1`)) === 0, 5_000, { message: 'the output and its oversized artifact dropped' });

      const p = await ended(poison.id);
      expect(p.state).toBe('FAILED'); // its own 101 bytes; the 500 behind `other:` were not counted as its
      expect(p.error?.message).toContain('101 bytes');
      await waitFor(async () => (await redis.exists(`res:${poison.id}`)) === 0, 5_000, { message: 'the poison output dropped' });
      expect(await redis.exists(jobKeys.meta(victim.id), `other:${victim.id}`)).toBe(2);
      expect(await stateOf(victim.id)).toBe('RUNNING');

      const u = await ended(unbounded.id);
      expect(u.state).toBe('SUCCEEDED');
      expect(u.maxArtifactBytes).toBeUndefined();
      await answer(victim.id, 10);
      expect((await ended(victim.id)).state).toBe('SUCCEEDED');
      for (const id of [over.id, fits.id, overByArtifact.id, unbounded.id, poison.id, victim.id]) expect(w.count(id)).toBe(1);
      await redis.del(`res:${fits.id}`, `res:${fits.id}:a1`, `res:${unbounded.id}`, `res:${victim.id}`, `other:${victim.id}`);
    });
  });

  it('a terminal result gives the job\'s own artifact keys the job TTL, on every path and again for a later result of the ended job; a pointer outside them is never touched (D45, P72)', async () => {
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const w = await worker('tw-artifacts', ['job.artifacts', 'job.artifacts1'], 'none');
      const ttlOf = (key: string) => redis.pttl(key);
      const JOB_TTL_MS = config.jobTtlMs;
      const running = async (id: string) => waitFor(async () => w.count(id) === 1 && (await stateOf(id)) === 'RUNNING', 10_000, { message: `${id} RUNNING` });
      const other = await submit('job.artifacts'); // another job, whose output keys a worker names
      await running(other.id);
      const foreign = [`res:${other.id}:log`, `res:${other.id}`, `other:${other.id}`];
      for (const k of foreign) await redis.set(k, 'theirs');

      // SUCCEEDED, the lock-free path (no size bound); FAILED goes the same path.
      const ok = await submit('job.artifacts');
      const failed = await submit('job.artifacts');
      for (const [job, status] of [[ok, JobStatus.SUCCEEDED], [failed, JobStatus.FAILED]] as const) {
        await running(job.id);
        await redis.set(`res:${job.id}`, '{"ok":true}');
        await redis.set(`res:${job.id}:log`, 'log lines');
        const artifactPtrs = [`redis://res:${job.id}:log`, ...foreign.map((k) => `redis://${k}`), 's3://bucket/x'];
        await publishResult(w.id, { jobId: job.id, status, workerId: w.id, resultPtr: `redis://res:${job.id}`, artifactPtrs, dispatch: nthRequest(w, job.id, 1).dispatch }, `artifacts:${job.id}`);
      }
      // FAILED_RETRYABLE past the attempts (the policy allows one) goes the locked path to FAILED.
      const spent = await submit('job.artifacts1');
      await running(spent.id);
      await redis.set(`res:${spent.id}:log`, 'partial log');
      await publishResult(w.id, { jobId: spent.id, status: JobStatus.FAILED_RETRYABLE, workerId: w.id, errorCode: 'flaky', artifactPtrs: [`redis://res:${spent.id}:log`, `redis://res:${other.id}:log`], dispatch: nthRequest(w, spent.id, 1).dispatch }, `artifacts:${spent.id}`);

      for (const [job, state] of [[ok, 'SUCCEEDED'], [failed, 'FAILED'], [spent, 'FAILED']] as const) {
        await waitFor(async () => (await stateOf(job.id)) === state, 10_000, { message: `${job.id} ${state}` });
        const ttl = await ttlOf(`res:${job.id}:log`);
        expect(ttl).toBeGreaterThan(JOB_TTL_MS - 60_000);
        expect(ttl).toBeLessThanOrEqual(JOB_TTL_MS);
      }
      expect(await ttlOf(`res:${ok.id}`)).toBeGreaterThan(0);
      for (const k of foreign) expect(await ttlOf(k)).toBe(-1);

      // A retryable failure (the job goes on to another attempt) gives that attempt's artifacts the TTL too.
      const retried = await submit('job.artifacts');
      await running(retried.id);
      await redis.set(`res:${retried.id}:log-1`, 'attempt 1');
      await publishResult(w.id, { jobId: retried.id, status: JobStatus.FAILED_RETRYABLE, workerId: w.id, errorCode: 'flaky', artifactPtrs: [`redis://res:${retried.id}:log-1`], dispatch: nthRequest(w, retried.id, 1).dispatch }, `artifacts-retry:${retried.id}`);
      await waitFor(async () => (await ttlOf(`res:${retried.id}:log-1`)) > JOB_TTL_MS - 60_000, 10_000, { message: 'attempt 1 artifacts expire' });

      // A later result for the ended job re-runs D45 for the artifacts it names (a TTL lost in
      // between comes back): here a retryable one, which skips the lock-free path (a terminal
      // status expires them there before the write is refused).
      const ignored = await counter('cordum_scheduler_ignored_packets_total', 'reason', 'terminal');
      await redis.persist(`res:${ok.id}:log`);
      await publishResult(w.id, { jobId: ok.id, status: JobStatus.FAILED_RETRYABLE, workerId: w.id, errorCode: 'late', artifactPtrs: [`redis://res:${ok.id}:log`, `redis://res:${other.id}:log`], dispatch: nthRequest(w, ok.id, 1).dispatch }, `artifacts-again:${ok.id}`);
      await waitFor(async () => (await counter('cordum_scheduler_ignored_packets_total', 'reason', 'terminal')) > ignored, 10_000, { message: 'redelivery ignored' });
      expect(await ttlOf(`res:${ok.id}:log`)).toBeGreaterThan(0);
      expect(await ttlOf(`res:${other.id}:log`)).toBe(-1);

      await publishResult(w.id, { jobId: other.id, status: JobStatus.SUCCEEDED, workerId: w.id, dispatch: nthRequest(w, other.id, 1).dispatch }, `artifacts:${other.id}`);
      await waitFor(async () => (await stateOf(other.id)) === 'SUCCEEDED', 10_000, { message: 'other job SUCCEEDED' });
      await redis.del(...foreign);
    });
  });

  it('text a worker sends is bounded before it is stored, and a status outside the enum is one metric label (P73)', async () => {
    await withTimeouts(LONG_TIMEOUTS, async () => {
      const w = await worker('tw-text', ['job.text'], 'none');
      const job = await submit('job.text');
      await waitFor(async () => w.count(job.id) === 1 && (await stateOf(job.id)) === 'RUNNING', 10_000, { message: 'RUNNING' });
      const dispatch = nthRequest(w, job.id, 1).dispatch;
      const unknownBefore = await counter('cordum_scheduler_ignored_packets_total', 'reason', 'status_unknown');
      await publishResult(w.id, { jobId: job.id, status: 999 as JobStatus, workerId: w.id, dispatch }, `odd:${job.id}`);
      await waitFor(async () => (await counter('cordum_scheduler_ignored_packets_total', 'reason', 'status_unknown')) === unknownBefore + 1, 10_000, { message: 'odd status counted' });
      const names = (await metrics.getSingleMetricAsString('cordum_scheduler_ignored_packets_total')).split('\n');
      expect(names.some((l) => l.includes('status_999'))).toBe(false);
      expect(await stateOf(job.id)).toBe('RUNNING');
      await publishResult(w.id, { jobId: job.id, status: JobStatus.FAILED, workerId: w.id, errorCode: 'c'.repeat(1_000), errorMessage: 'm'.repeat(100_000), dispatch }, `long:${job.id}`);
      const failed = await waitFor(async () => {
        const j = await store.getJob(job.id);
        return j?.state === 'FAILED' ? j : undefined;
      }, 10_000, { message: 'FAILED' });
      expect(failed.error?.code).toHaveLength(MAX_ERROR_CODE_CHARS);
      expect(failed.error?.message).toHaveLength(MAX_ERROR_MESSAGE_CHARS);
      expect(failed.error?.message.endsWith('…')).toBe(true);
      const dlq = await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry' });
      expect(dlq.reason.length).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_CHARS);
    });
  });

  describe('max_concurrent_jobs (P70)', () => {
    const out = (w: TestWorker, replied: Set<string>): string[] => [...w.executions.keys()].filter((id) => !replied.has(id));
    /** A worker for `topic` that holds its jobs, and a first job of `topic` out on it (a limit-1 group's slot taken). */
    async function oneOut(workerId: string, topic: string): Promise<{ w: TestWorker; first: JobRecord }> {
      const w = await worker(workerId, [topic], 'none');
      const first = await submit(topic);
      await waitFor(() => w.count(first.id) === 1, 10_000, { message: 'first job out' });
      return { w, first };
    }
    const inQueue = (group: string, id: string, message: string) => waitFor(async () => (await redis.zscore(jobKeys.slotWaiters(group), id)) !== null, 10_000, { message });
    async function finish(w: TestWorker, id: string, replied: Set<string>): Promise<void> {
      replied.add(id);
      await w.reply(nthRequest(w, id, 1), JobStatus.SUCCEEDED);
      await waitFor(async () => (await stateOf(id)) === 'SUCCEEDED', 10_000, { message: `${id} SUCCEEDED` });
    }

    it('at most N of a tenant\'s jobs under the rule are out at once; the longest waiter goes when a slot frees; another tenant has its own slots', async () => {
      await withTimeouts(LONG_TIMEOUTS, async () => {
        const w = await worker('tw-conc', ['job.conc'], 'none');
        const group = 'acme/cap-conc';
        const waitsBefore = (await metrics.getSingleMetricAsString('cordum_scheduler_slot_waits_total')).match(/ (\d+)$/m)?.[1] ?? '0';
        const jobs: JobRecord[] = [];
        for (let i = 0; i < 5; i += 1) jobs.push(await submit('job.conc'));
        const ids = jobs.map((j) => j.id);
        // Barrier: every job was looked at, two went out and three queued (each filed as a waiter).
        await waitFor(async () => (await redis.zcard(jobKeys.slotWaiters(group))) === 3 && w.executions.size === 2, 10_000, { message: 'two out, three queued' });
        expect(Number((await metrics.getSingleMetricAsString('cordum_scheduler_slot_waits_total')).match(/ (\d+)$/m)?.[1])).toBeGreaterThanOrEqual(Number(waitsBefore) + 3);
        const queue = await redis.zrange(jobKeys.slotWaiters(group), '0', '-1');
        expect(new Set([...queue, ...w.executions.keys()])).toEqual(new Set(ids));
        for (const id of queue) {
          expect(await stateOf(id)).toBe('PENDING');
          const waiting = await store.getJob(id);
          expect(waiting?.concurrency).toEqual({ group, limit: 2 });
          expect(waiting && jobToApi(waiting, null).concurrency).toEqual({ group, limit: 2 });
        }
        expect((await redis.zrange(jobKeys.slots(group), '0', '-1')).sort()).toEqual([...w.executions.keys()].sort());
        // Per tenant: another tenant's job under the same rule goes at once.
        const other = await submit('job.conc', { tenant: 'globex' });
        await waitFor(() => w.count(other.id) === 1, 10_000, { message: 'the other tenant\'s job dispatched' });
        const replied = new Set<string>([other.id]);
        await w.reply(nthRequest(w, other.id, 1), JobStatus.SUCCEEDED);

        // Each slot freed lets exactly the longest waiter in, never a third job out at once.
        for (const next of queue) {
          const running = out(w, replied).filter((id) => ids.includes(id));
          expect(running).toHaveLength(2);
          await finish(w, running[0] as string, replied);
          await waitFor(() => w.count(next) === 1, 10_000, { message: `${next} dispatched when a slot freed` });
          expect(out(w, replied).filter((id) => ids.includes(id))).toHaveLength(2);
          const notYet = queue.slice(queue.indexOf(next) + 1);
          for (const id of notYet) expect(w.count(id)).toBe(0);
        }
        for (const id of out(w, replied)) await finish(w, id, replied);
        for (const id of ids) expect(w.count(id)).toBe(1);
        await waitFor(async () => (await redis.zcard(jobKeys.slots(group))) === 0 && (await redis.zcard(jobKeys.slotWaiters(group))) === 0, 5_000, { message: 'slots given back' });
        await waitFor(async () => !(await redis.sismember(jobKeys.slotGroups(), group)), 5_000, { message: 'group unlisted once nobody waits' });
      });
    });

    it('a cancelled waiter leaves the queue, and a holder a crash left behind is dropped once its job is gone', async () => {
      await withTimeouts(LONG_TIMEOUTS, async () => {
        const w = await worker('tw-conc1', ['job.conc1'], 'none');
        const group = 'acme/cap-one';
        // A slot still held by a job with no record (its terminal write's slot update lost, then the
        // record expired), and one by a PENDING job that took it ten minutes ago and was never
        // dispatched (its replica died between the two writes).
        await redis.zadd(jobKeys.slots(group), Date.now(), 'gone-job');
        const neverSent = await store.createJob(newJob('job.conc1'));
        await redis.zadd(jobKeys.active('PENDING'), Date.now() + 300_000, neverSent.id);
        await redis.zadd(jobKeys.slots(group), Date.now() - 600_000, neverSent.id);
        const first = await submit('job.conc1');
        await waitFor(() => w.count(first.id) === 1, 10_000, { message: 'the stale holder dropped, the waiter dispatched' });
        expect(await redis.zrange(jobKeys.slots(group), '0', '-1')).toEqual([first.id]);
        const cancelled = await submit('job.conc1');
        await inQueue(group, cancelled.id, 'second job queued');
        await bus.publish(subjects.cancel, encodePacket(newPacket('cancel-test', { case: 'jobCancel', value: create(JobCancelSchema, { jobId: cancelled.id, reason: 'not needed', requestedBy: 'tester' }) })));
        await waitFor(async () => (await stateOf(cancelled.id)) === 'CANCELLED', 10_000, { message: 'waiter cancelled' });
        await waitFor(async () => (await redis.zscore(jobKeys.slotWaiters(group), cancelled.id)) === null, 5_000, { message: 'cancelled waiter out of the queue' });
        const third = await submit('job.conc1');
        await inQueue(group, third.id, 'third job queued');
        await finish(w, first.id, new Set());
        await waitFor(() => w.count(third.id) === 1, 10_000, { message: 'third job dispatched when the slot freed' });
        // The third job's dispatch is the barrier: the cancelled one was never dispatched.
        expect(w.count(cancelled.id)).toBe(0);
        await finish(w, third.id, new Set());
      });
    });

    it('a queued job whose topic lost its worker leaves the queue instead of holding up the jobs behind it', async () => {
      await withTimeouts(LONG_TIMEOUTS, async () => {
        const { w, first } = await oneOut('tw-concA', 'job.concA');
        const group = 'acme/cap-shared';
        // Queued earlier on job.concB, whose worker has gone since; it had waited for a worker before.
        const stranded = await store.createJob(newJob('job.concB'));
        await redis.hset(jobKeys.meta(stranded.id), 'concurrency', JSON.stringify({ group, limit: 1 }), 'scheduleTries', '1');
        await redis.zadd(jobKeys.active('PENDING'), Date.now() + 300_000, stranded.id);
        await redis.zadd(jobKeys.slotWaiters(group), Date.now() - 1_000, stranded.id);
        const next = await submit('job.concA');
        await inQueue(group, next.id, 'next job queued');
        expect(await redis.zrange(jobKeys.slotWaiters(group), '0', '-1')).toEqual([stranded.id, next.id]);
        await finish(w, first.id, new Set());
        await waitFor(() => w.count(next.id) === 1, 10_000, { message: 'the job behind the stranded one dispatched' });
        expect(await redis.zscore(jobKeys.slotWaiters(group), stranded.id)).toBeNull();
        expect(await stateOf(stranded.id)).toBe('PENDING');
        await finish(w, next.id, new Set());
      });
    });

    it('the orphan sweep leaves a queued job alone: no Check spent, not counted as lost', async () => {
      await withTimeouts(LONG_TIMEOUTS, async () => {
        const { w, first } = await oneOut('tw-concS', 'job.concS');
        const group = 'acme/cap-sweep';
        const queued = await submit('job.concS');
        await inQueue(group, queued.id, 'second job queued');
        const checks = kernel.checks.filter((c) => c.jobId === queued.id).length;
        const lost = await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost');
        // Its orphan clock due now: the next sweep finds it.
        await redis.zadd(jobKeys.active('PENDING'), 'XX', Date.now() - 10_000, queued.id);
        await waitFor(async () => Number(await redis.zscore(jobKeys.active('PENDING'), queued.id)) > Date.now() + 60_000, 10_000, { message: 'the sweep moved its clock on' });
        expect(kernel.checks.filter((c) => c.jobId === queued.id)).toHaveLength(checks);
        expect(await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost')).toBe(lost);
        expect(await stateOf(queued.id)).toBe('PENDING');
        await finish(w, first.id, new Set());
        await waitFor(() => w.count(queued.id) === 1, 10_000, { message: 'queued job dispatched when the slot freed' });
        await finish(w, queued.id, new Set());
      });
    });
  });

  it('RUNNING past the running timeout ends TIMEOUT, never redispatched; deadline_ms ends it earlier (D46)', async () => {
    const w = await worker('tw-d', ['job.rd'], 'none');
    const timedOutBefore = await counter('cordum_scheduler_reconciled_total', 'action', 'running_timeout');
    const slow = await submit('job.rd');
    const withDeadline = await submit('job.rd', { deadlineMs: 1_000 });
    await waitFor(async () => (await stateOf(withDeadline.id)) === 'TIMEOUT', 10_000, { message: 'deadline TIMEOUT' });
    expect((await store.getJob(withDeadline.id))?.error?.code).toBe('deadline_exceeded');
    expect(await stateOf(slow.id)).toBe('RUNNING');
    await waitFor(async () => (await stateOf(slow.id)) === 'TIMEOUT', 10_000, { message: 'running TIMEOUT' });
    expect((await store.getJob(slow.id))?.error?.code).toBe('running_timeout');
    expect(w.count(slow.id)).toBe(1);
    // written after the terminal write (D14)
    expect(await waitFor(() => store.getDlq(slow.id), 5_000, { message: 'DLQ entry (written just after the state)' })).toMatchObject({ reason_code: 'running_timeout' });
    await waitFor(async () => (await counter('cordum_scheduler_reconciled_total', 'action', 'running_timeout')) >= timedOutBefore + 1, 5_000, { message: 'counted as running_timeout' });
  });

  it('a job timed out while its DLQ write fails stays in its in-flight index, and the reconciler\'s repair writes the entry (P38)', async () => {
    const w = await worker('tw-dq', ['job.rdq'], 'none');
    const job = await submit('job.rdq');
    await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 10_000, { message: 'RUNNING' });
    // dlq:index of the wrong type: every DLQ write fails at its ZADD, after the entry's SET NX.
    const saved = await redis.zrange(jobKeys.dlqIndex(), '0', '-1', 'WITHSCORES');
    await redis.del(jobKeys.dlqIndex());
    await redis.set(jobKeys.dlqIndex(), 'not a sorted set');
    const failedZadds = async (): Promise<number> => Number(/^cmdstat_zadd:.*failed_calls=(\d+)/m.exec(await redis.info('commandstats'))?.[1] ?? 0);
    const failedBefore = await failedZadds();
    try {
      await waitFor(async () => (await stateOf(job.id)) === 'TIMEOUT', 10_000, { message: 'running TIMEOUT' });
      // The timeout's DLQ write failed, and so did a later sweep's repair of the job, which found
      // it still filed as RUNNING: the index move waits for the entry.
      await waitFor(async () => (await failedZadds()) >= failedBefore + 2, 10_000, { message: 'the DLQ write and a repair of it refused' });
      expect(await redis.zscore(jobKeys.active('RUNNING'), job.id)).not.toBeNull();
      expect(await redis.exists(jobKeys.dlqEntry(job.id))).toBe(1);
    } finally {
      await redis.del(jobKeys.dlqIndex());
      for (let i = 0; i + 1 < saved.length; i += 2) await redis.zadd(jobKeys.dlqIndex(), saved[i + 1] as string, saved[i] as string);
    }
    // Nothing redelivers a reconciler's write: before P38 the job had left job:active:RUNNING
    // ahead of its entry, so no sweep came back to it and it was never listed in the DLQ.
    await waitFor(async () => (await redis.zscore(jobKeys.dlqIndex(), job.id)) !== null, 10_000, { message: 'DLQ index entry written by the repair' });
    await waitFor(async () => (await redis.zscore(jobKeys.active('RUNNING'), job.id)) === null, 10_000, { message: 'out of job:active:RUNNING' });
    expect(await store.getDlq(job.id)).toMatchObject({ reason_code: 'running_timeout', last_state: 'TIMEOUT' });
    expect(await stateOf(job.id)).toBe('TIMEOUT');
    expect(w.count(job.id)).toBe(1);
  });

  it('setTimeouts applies new timeouts and scan interval live', async () => {
    await worker('tw-e', ['job.re'], 'none');
    await withTimeouts({ dispatch_timeout_seconds: 3, running_timeout_seconds: 3600, scan_interval_seconds: 3600 }, async () => {
      const job = await submit('job.re');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 5_000);
      const t0 = Date.now();
      scheduler.setTimeouts({ reconciler: { dispatch_timeout_seconds: 3, running_timeout_seconds: 0.5, scan_interval_seconds: 0.2 } });
      await waitFor(async () => (await stateOf(job.id)) === 'TIMEOUT', 5_000, { message: 'TIMEOUT under the new values' });
      expect(Date.now() - t0).toBeLessThan(3_000); // the 0.5 s applied, not the 3600 s set before (nor the 3 s dispatch timeout)
    });
  });

  it('a result that arrives while a dead replica still holds the job lock is applied once the lock expires (not dropped after MaxDeliver)', async () => {
    const w = await worker('tw-g', ['job.rg'], 'none');
    await withTimeouts({ dispatch_timeout_seconds: 3, running_timeout_seconds: 3600, scan_interval_seconds: 0.3 }, async () => {
      const job = await submit('job.rg');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 5_000, { message: 'RUNNING' });
      // a replica that died holding the lock: its key lives on for the TTL
      await redis.set(jobKeys.lock(job.id), 'dead-replica:999', 'PX', 4_000);
      const req = w.executions.get(job.id)?.[0]?.request;
      if (!req) throw new Error('no execution recorded');
      await w.reply(req, JobStatus.SUCCEEDED);
      // 20 deliveries at a fixed 100 ms would be spent in ~2 s and the result lost
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 20_000, { message: 'result applied after the lock expired' });
    });
  });

  it('worker_busy refusals are backpressure: they wait with backoff and do not use up attempts (D48)', async () => {
    const w = await worker('tw-h', ['job.rh'], 'none');
    const job = await submit('job.rh');
    for (let n = 1; n <= 3; n++) await refuseBusy(w, job.id, n);
    await waitFor(() => w.count(job.id) === 4, 20_000, { message: 'fourth dispatch after three refusals' });
    await w.reply(nthRequest(w, job.id, 4), JobStatus.SUCCEEDED);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED on attempt 4 of max 3' });
    expect(await store.getJob(job.id)).toMatchObject({ attempts: 4, busyRefusals: 3 });
  }, 40_000);

  it('busy refusals do not use up the attempts that replacing a lost dispatch needs (D48 with D1 b)', async () => {
    // Silent: records each dispatch but never claims, acks or answers it, so an unanswered one is lost.
    const w = await worker('tw-hb', ['job.rhb'], 'silent');
    const job = await submit('job.rhb');
    for (let n = 1; n <= 2; n++) await refuseBusy(w, job.id, n);
    // Dispatch 3 (attempts = 3 = maxAttempts, two of them refusals) gets no answer: the verifier
    // replaces it after its 1 s delay. Counted against maxAttempts with the refusals, it was left
    // 'exhausted' and ended TIMEOUT dispatch_timeout at 3 s although only one attempt was lost.
    await waitFor(() => w.count(job.id) === 3, 15_000, { message: 'dispatch 3' });
    await waitFor(() => w.count(job.id) === 4, 10_000, { message: 'the lost third dispatch replaced' });
    await w.reply(nthRequest(w, job.id, 4), JobStatus.SUCCEEDED);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED on the replacement' });
    expect(await store.getJob(job.id)).toMatchObject({ attempts: 4, busyRefusals: 2 });
  }, 60_000);

  it('a result without a dispatch id is applied once: its redelivery after the handler failed starts no further attempt (P41)', async () => {
    const w = await worker('tw-nd', ['job.rnd'], 'silent');
    const job = await submit('job.rnd');
    await waitFor(() => w.count(job.id) === 1, 10_000, { message: 'attempt 1' });
    failAfterRetryWriteOnce.add(job.id);
    // The redelivery finds the job RETRYING (its retry waits its backoff, P140) or, later, attempt 2 out.
    const ignored = async (): Promise<number> =>
      (await counter('cordum_scheduler_ignored_packets_total', 'reason', 'already_applied')) + (await counter('cordum_scheduler_ignored_packets_total', 'reason', 'unexpected_state_RETRYING'));
    const before = await ignored();
    // A CAP worker may leave `dispatch` out: the result applies to the current attempt (CONTRACT §3).
    await publishResult('tw-nd', { jobId: job.id, status: JobStatus.FAILED_RETRYABLE, workerId: 'tw-nd', errorCode: 'flaky', errorMessage: 'try again' }, `anon:${job.id}:1`);
    // The handler fails after its RETRYING write and the result is redelivered; the retry sends attempt 2.
    await waitFor(async () => (await ignored()) > before, 15_000, { message: 'the redelivered result ignored' });
    await waitFor(() => w.count(job.id) >= 2, 10_000, { message: 'attempt 2 dispatched' });
    expect(failAfterRetryWriteOnce.has(job.id)).toBe(false);
    // Before P41 the redelivery applied to attempt 2 and dispatched attempt 3 while 2 ran.
    expect([...new Set(w.executions.get(job.id)?.map((e) => Number(e.request.dispatch?.attempt ?? 0n)))].sort()).toEqual([1, 2]);
    const second = w.executions.get(job.id)?.find((e) => e.request.dispatch?.attempt === 2n)?.request;
    if (!second) throw new Error('no attempt 2');
    await w.reply(second, JobStatus.SUCCEEDED);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'SUCCEEDED on attempt 2' });
    expect(await store.getJob(job.id)).toMatchObject({ attempts: 2 });
  }, 40_000);

  it('replays a PENDING job whose submit was lost, and counts it', async () => {
    const w = await worker('tw-f', ['job.rf']);
    const lostBefore = await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost');
    const job = await store.createJob(newJob('job.rf')); // never published
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'orphan SUCCEEDED' });
    expect(w.count(job.id)).toBe(1);
    // The replayer counts the orphan once its drive returns, after its own bookkeeping reads;
    // the worker's result can be applied (SUCCEEDED) before that, so wait for the count.
    await waitFor(async () => (await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost')) === lostBefore + 1, 5_000, { message: 'orphan counted as lost' });
  });

  it('P35: submits queued in the stream past the replay age are left to their messages, not driven as lost orphans; each job runs once', async () => {
    const w = await worker('tw-q', ['job.rq']);
    const lostBefore = await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost');
    // 64 intake handlers, each Check SLOW_CHECK_MS: 128 jobs/s, so most of 400 wait in the
    // stream well past the suite's 1 s SCHEDULER_PENDING_REPLAY_AGE (200 ms replayer turns).
    const jobs = await Promise.all(Array.from({ length: 400 }, () => submit('job.rq')));
    const backlog = await bus.backlog(QUEUE, subjects.submit);
    expect(backlog.undelivered).toBeGreaterThan(0);
    expect(backlog.newestDeliveredAt).not.toBeNull();
    // The scheduler's gauge reads the same consumer at each scrape.
    const backlogGauge = async (): Promise<Record<string, number>> =>
      Object.fromEntries((await metrics.getSingleMetric('cordum_scheduler_submit_backlog')?.get())?.values.map((v) => [String(v.labels['kind']), v.value]) ?? []);
    const queued = await backlogGauge();
    expect(Object.keys(queued).sort()).toEqual(['unacked', 'undelivered']);
    expect((queued['undelivered'] ?? 0) + (queued['unacked'] ?? 0)).toBeGreaterThan(0);
    await waitFor(async () => (await Promise.all(jobs.map((j) => stateOf(j.id)))).every((st) => st === 'SUCCEEDED'), 30_000, { message: '400 queued jobs SUCCEEDED', intervalMs: 200 });
    expect(jobs.filter((j) => w.count(j.id) !== 1).map((j) => [j.id, w.count(j.id)])).toEqual([]);
    // The queue did wait past the replay age: many jobs were dispatched more than 1.5 s after their create.
    const done = await Promise.all(jobs.map((j) => store.getJob(j.id)));
    const waited = done.filter((j) => j?.dispatchedAt !== undefined && j.dispatchedAt - j.createdAt > 1_500).length;
    expect(waited).toBeGreaterThan(50);
    // Without P35 the replayer took dozens of them (32 and 40 in two runs) ahead of their messages as lost orphans.
    expect((await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost')) - lostBefore).toBe(0);
    // Drained: the last acks reach the server just after the dispatches they follow.
    await waitFor(async () => (await bus.backlog(QUEUE, subjects.submit)).unacked === 0, 5_000, { message: 'every submit acked' });
    expect(await bus.backlog(QUEUE, subjects.submit)).toEqual({ undelivered: 0, unacked: 0, newestDeliveredAt: null });
    expect(await backlogGauge()).toEqual({ undelivered: 0, unacked: 0 });
  }, 60_000);

  it('an in-flight index entry whose record is gone is dropped by the replayer, and the fence counter its lock created gets the job TTL', async () => {
    const id = `gone-${process.pid}-${++seq}`;
    // What a Redis that lost the record but kept the index (or a record past its TTL) leaves.
    await redis.zadd(jobKeys.active('PENDING'), Date.now() - 60_000, id);
    await waitFor(async () => (await redis.zscore(jobKeys.active('PENDING'), id)) === null, 10_000, { message: 'index entry dropped' });
    expect(await redis.exists(jobKeys.fence(id))).toBe(1);
    expect(await redis.pttl(jobKeys.fence(id))).toBeGreaterThan(0);
  });

  it('a job re-held for approval by a replica that died before its index move is taken out of job:active:PENDING and listed for approval by the replayer', async () => {
    const held = await store.createJob(newJob('job.rehold', { initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'r', ruleId: 'r1', policySnapshot: 's' } }));
    // What PENDING → APPROVAL_REQUIRED leaves when its writer dies between the record and the index batch.
    await redis.zrem(jobKeys.indexState('acme', 'APPROVAL_REQUIRED'), held.id);
    await redis.zadd(jobKeys.indexState('acme', 'PENDING'), held.createdAt, held.id);
    await redis.zadd(jobKeys.active('PENDING'), Date.now() - 120_000, held.id);
    await waitFor(async () => (await redis.zscore(jobKeys.active('PENDING'), held.id)) === null, 10_000, { message: 'stale in-flight entry dropped' });
    expect(await redis.zscore(jobKeys.indexState('acme', 'APPROVAL_REQUIRED'), held.id)).toBe(String(held.createdAt));
    expect(await stateOf(held.id)).toBe('APPROVAL_REQUIRED');
  });

  it('a job on a topic nobody serves is parked (no job:retry timer), then FAILED + DLQ no_workers when its backoff schedule would have hit the tries bound (D13, P15)', async () => {
    const job = await submit('job.nobody');
    const first = await waitFor(async () => { const j = await store.getJob(job.id); return j?.scheduleTries === 1 ? j : null; }, 5_000, { message: 'first try counted' });
    const parkedAt = first.workerWait!.lastTryAt!; // the scheduler's time of the try that parked it
    await waitFor(async () => (await redis.zscore(jobKeys.parked('job.nobody'), job.id)) !== null, 2_000, { message: 'parked on its topic' });
    expect(await store.hasRetry(job.id)).toBe(false);
    expect(await redis.sismember(jobKeys.parkedTopics(), 'job.nobody')).toBe(1);
    await waitFor(async () => (await stateOf(job.id)) === 'FAILED', 15_000, { message: 'FAILED no_workers' });
    // tries 2 (SCHEDULER_SCHEDULE_MAX_TRIES) → the third try would come 1 s + 2 s after the first
    const failed = await store.getJob(job.id);
    expect(failed!.finishedAt! - parkedAt).toBeGreaterThanOrEqual(2_500);
    expect(failed).toMatchObject({ scheduleTries: 2, error: { code: 'no_workers' } });
    await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry' }); // written after the terminal write (D14)
    expect(await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry (written just after the state)' })).toMatchObject({ reason_code: 'no_workers', last_state: 'FAILED' });
    expect(await store.hasRetry(job.id)).toBe(false);
    await waitFor(async () => (await redis.sismember(jobKeys.parkedTopics(), 'job.nobody')) === 0, 2_000, { message: 'topic forgotten once nothing is parked on it' });
    expect(await redis.exists(jobKeys.parked('job.nobody'))).toBe(0);
  });

  it('a backlog parked on an unserved topic costs no per-job Redis work while it waits (P15)', async () => {
    // Three schedule tries here (the suite's 2 leave 3 s after the park): the bound is 1 + 2 + 4 s
    // after the park, which leaves room for ten replayer turns on a loaded machine.
    const suiteTries = config.replay.maxScheduleTries;
    config.replay.maxScheduleTries = 3;
    try {
      await parkedBacklogCostsNothing();
    } finally {
      config.replay.maxScheduleTries = suiteTries;
    }
  });

  async function parkedBacklogCostsNothing(): Promise<void> {
    const jobs = await Promise.all(Array.from({ length: 600 }, () => submit('job.backlog')));
    await waitFor(async () => (await redis.zcard(jobKeys.parked('job.backlog'))) === jobs.length, 15_000, { message: 'all 600 parked' });
    const calls = async (): Promise<{ total: number; smembers: number }> => {
      const c = await commandCalls(redis);
      let total = 0;
      for (const [name, n] of c) if (name !== 'info') total += n;
      return { total, smembers: callsOf(c, 'smembers') };
    };
    // The first parked job is due to fail (its bound: 1 + 2 + 4 s after its park) at the lowest
    // score; the window must close before that, or it would count the expiry of the backlog.
    const [, firstDue] = await redis.zrangebyscore(jobKeys.parked('job.backlog'), '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, 1);
    const closeBy = Number(firstDue) - 400;
    // Let the parking finish first: on a loaded machine the last jobs' lock releases (and orphan
    // drives of jobs that waited > 1 s for intake) are still in flight when the last one is parked.
    // Settled = one replayer turn with background-sized traffic (a turn costs ~13 commands).
    let prev = await calls();
    await waitFor(async () => {
      const cur = await calls();
      if (cur.smembers === prev.smembers) return false;
      const quiet = cur.total - prev.total < 60 * (cur.smembers - prev.smembers);
      prev = cur;
      return quiet;
    }, 10_000, { message: 'parking settled', intervalMs: 50 });
    const before = prev;
    // From here every job is parked: the sweep re-drives none of them (before, on a cold or loaded
    // machine, a job whose intake took > 1 s (SCHEDULER_PENDING_REPLAY_AGE) is rightly an orphan).
    const lostBefore = await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost');
    const sample = jobs.slice(0, 20).map((x) => x.id);
    const triesBefore = (await Promise.all(sample.map((id) => store.getJob(id)))).map((j) => ({ state: j?.state, tries: j?.scheduleTries }));
    // The replayer leader reads job:parked:topics once per turn (200 ms): ten turns span the first
    // two backoff tries (1 s, 2 s ±20 %) that a polled wait would have made for each job. On a
    // loaded machine parking 600 jobs takes longer and fewer turns fit before the first is due.
    await waitFor(async () => (await calls()).smembers >= before.smembers + 10 || Date.now() >= closeBy, 10_000, { message: 'ten replayer turns', intervalMs: 50 });
    const stillParked = await redis.zcard(jobKeys.parked('job.backlog'));
    const after = await calls();
    const turns = after.smembers - before.smembers;
    expect({ stillParked, enoughTurns: turns >= 5 }).toEqual({ stillParked: jobs.length, enoughTurns: true });
    // Background of ten turns (leases, scans, snapshot writes) is a few dozen commands a turn;
    // a polled wait costs ≥ 5 commands per job and try (lock, read, patch, retry, index).
    console.log(`Redis commands in ${turns} replayer turns with 600 parked jobs: ${after.total - before.total}`);
    expect(after.total - before.total).toBeLessThan(jobs.length / 2);
    // No try counted while they waited (a polled wait counts one per backoff step).
    expect(triesBefore.every((t) => t.state === 'PENDING')).toBe(true);
    expect((await Promise.all(sample.map((id) => store.getJob(id)))).map((j) => ({ state: j?.state, tries: j?.scheduleTries }))).toEqual(triesBefore);
    // Polls only the jobs not yet FAILED, every 200 ms: 600 reads every 25 ms from this same
    // process starved the scheduler under test and stretched the expiry it waits for.
    let left = jobs.map((x) => x.id);
    await waitFor(async () => {
      const states = await Promise.all(left.map((id) => stateOf(id)));
      left = left.filter((_, i) => states[i] !== 'FAILED');
      return left.length === 0;
    }, 30_000, { message: 'all FAILED at their bound', intervalMs: 200 }).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; not FAILED (${left.length}): ${JSON.stringify(await whereAre(left, 'job.backlog'))}`);
    });
    // A backlog expiring faster than the replayer fails LIMIT parked jobs a turn is reached by the
    // orphan sweep too: those jobs are parked, not orphans, and fail at their bound, never
    // re-driven (a re-drive counted a try and parked the job again past its bound: fresh-clone CI
    // saw the backlog miss this 30 s wait).
    expect(await counter('cordum_scheduler_orphan_replayed_total', 'reason', 'lost')).toBe(lostBefore);
  }

  /** Where the jobs that did not end FAILED wait (failure messages): state, tries, parked/retry/active scores, lock owner. */
  async function whereAre(ids: string[], topic: string): Promise<object[]> {
    const out: object[] = [];
    for (const id of ids) {
      const j = await store.getJob(id);
      if (j?.state === 'FAILED') continue;
      const [parked, retry, active, lock] = await Promise.all([
        redis.zscore(jobKeys.parked(topic), id),
        redis.zscore(jobKeys.retry(), id),
        j ? redis.zscore(jobKeys.active(j.state), id) : null,
        redis.get(jobKeys.lock(id)),
      ]);
      out.push({ id, state: j?.state, tries: j?.scheduleTries, updatedAgoMs: j ? Date.now() - j.updatedAt : null, parked, retry, active, lock, now: Date.now() });
      if (out.length >= 5) break;
    }
    return out;
  }

  it('jobs parked for a worker are dispatched by the replayer once one appears, each once', async () => {
    const jobs = await Promise.all(Array.from({ length: 50 }, () => submit('job.late')));
    await waitFor(async () => (await redis.zcard(jobKeys.parked('job.late'))) === jobs.length, 5_000, { message: 'all parked' });
    const w = await worker('tw-late', ['job.late']);
    await waitFor(async () => (await Promise.all(jobs.map((x) => stateOf(x.id)))).every((st) => st === 'SUCCEEDED'), 10_000, { message: 'dispatched after the wait' });
    for (const j of jobs) expect(w.count(j.id)).toBe(1);
    expect(await redis.exists(jobKeys.parked('job.late'))).toBe(0);
  });

  it('a job waiting for a worker that serves its topic but not its placement waits in job:retry, not parked', async () => {
    await worker('tw-place', ['job.place']);
    const job = await submit('job.place', { labels: { 'placement.zone': 'nowhere' } });
    await waitFor(async () => (await store.getJob(job.id))?.scheduleTries === 1, 5_000, { message: 'first try counted' });
    // The retry entry is filed once the try's write has answered.
    await waitFor(() => store.hasRetry(job.id), 5_000, { message: 'filed in job:retry' });
    expect(await redis.zscore(jobKeys.parked('job.place'), job.id)).toBeNull();
    await waitFor(async () => (await stateOf(job.id)) === 'FAILED', 15_000, { message: 'FAILED no_workers' });
    expect(await store.getJob(job.id)).toMatchObject({ scheduleTries: 2, error: { code: 'no_workers' } });
  });

  it('writes the worker snapshot, and a new replica hydrates from it (warm start) and is ready', async () => {
    await waitFor(async () => (await readWorkerSnapshot(redis)).items.some((w) => w.worker_id === 'tw-a' && w.online), 5_000, { message: 'snapshot written' });
    const snap = await readWorkerSnapshot(redis);
    expect(snap.writer_id).toBe('sched-rec');
    expect(await redis.get('cordum:scheduler:snapshot:writer')).toMatch(/^sched-rec:/);
    const b = createScheduler(config, { logger: createLogger({ service: 'scheduler', instance: 'sched-b', level: 'error' }), instanceId: 'sched-b', registry: new Registry() });
    try {
      await b.start();
      expect(b.hydration).toMatchObject({ kind: 'warm' });
      expect(b.workers.live().map((w) => w.workerId)).toEqual(expect.arrayContaining(['tw-a', 'a-ghost']));
      const ready = await fetch(`http://127.0.0.1:${b.httpPort}/readyz`);
      expect(await ready.json()).toMatchObject({ ready: true, checks: { workers_hydrated: true } });
    } finally {
      await b.stop();
    }
  });
});
