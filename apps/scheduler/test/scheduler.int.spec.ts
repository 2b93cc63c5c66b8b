import { subjects, type Bus, type Subscription } from '@cordum/bus';
import { createJobStore, jobKeys, type JobRecord, type JobStore, type NewJob } from '@cordum/job-store';
import { create, decodePacket, encodePacket, JobCancelSchema, JobRequestSchema, JobResultSchema, JobStatus, newPacket, type BusPacket } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { waitFor, type TestServer } from '@cordum/testing';
import type { Registry } from 'prom-client';
import type { Scheduler } from '../src/scheduler';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

// createScheduler in-process against real Redis + NATS, a test SafetyKernel
// (denies job.denied) and a test worker on core NATS.
describe('scheduler (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let natsServer: TestServer;
  let redis: RedisClient;
  let bus: Bus;
  let store: JobStore;
  let kernel: TestKernel;
  let worker: TestWorker;
  let scheduler: Scheduler;
  let metrics: Registry;
  let stateSub: Subscription;
  let dlqSub: Subscription;
  const states = new Map<string, string[]>();
  const dlqNotices: BusPacket[] = [];
  let seq = 0;

  beforeAll(async () => {
    kernel = await startTestKernel(['job.denied']);
    // DLQ_TTL shortened (P238): the DLQ test below reads it from the entry's TTL.
    rig = await startSchedulerRig({ instanceId: 'sched-test', kernelAddress: kernel.address, env: { DLQ_TTL: '2h' } });
    ({ natsServer, redis, store, scheduler, metrics, bus } = rig);
    stateSub = bus.subscribe(subjects.state, (data) => {
      const p = decodePacket(data);
      if (p.payload.case !== 'jobProgress') return;
      const list = states.get(p.payload.value.jobId) ?? [];
      list.push(p.payload.value.message);
      states.set(p.payload.value.jobId, list);
    });
    dlqSub = bus.subscribe(subjects.dlq, (data) => dlqNotices.push(decodePacket(data)));
    worker = await startTestWorker({
      natsUrl: natsServer.url,
      redis,
      id: 'tw1',
      topics: ['job.echo', 'job.manual', 'job.flaky', 'job.silent'],
      replyFor: (topic) => (topic === 'job.manual' ? 'none' : topic === 'job.flaky' ? 'retry-once' : topic === 'job.silent' ? 'silent' : 'succeed'),
    });
    await waitFor(() => scheduler.workers.live().some((w) => w.workerId === 'tw1' && w.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    stateSub?.unsubscribe();
    dlqSub?.unsubscribe();
    await worker?.stop();
    await scheduler?.stop();
    await rig?.stop(); // stops the scheduler again: idempotent
    await kernel?.stop();
  });

  function newJob(topic: string): NewJob {
    seq += 1;
    return {
      id: `it-${process.pid}-${seq}`, tenant: 'acme', topic, traceId: `trace-${seq}`, priority: 'interactive', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'PENDING',
    };
  }

  async function submit(topic: string): Promise<JobRecord> {
    const job = await store.createJob(newJob(topic));
    await publishSubmit(job);
    return job;
  }

  async function publishSubmit(job: JobRecord, msgId?: string): Promise<void> {
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), msgId ? { msgId } : {});
  }

  const stateOf = async (id: string) => (await store.getJob(id))?.state;
  async function jobsTotal(state: string): Promise<number> {
    const m = await metrics.getSingleMetric('cordum_jobs_total')?.get();
    return m?.values.find((v) => v.labels['state'] === state)?.value ?? 0;
  }
  async function ignoredCount(kind: string, reason: string): Promise<number> {
    const m = await metrics.getSingleMetric('cordum_scheduler_ignored_packets_total')?.get();
    return m?.values.filter((v) => v.labels['kind'] === kind && v.labels['reason'] === reason).reduce((a, v) => a + v.value, 0) ?? 0;
  }

  it('runs an allowed job to SUCCEEDED through direct dispatch, once', async () => {
    const job = await submit('job.echo');
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED' });
    const done = (await store.getJob(job.id))!;
    expect(done).toMatchObject({ attempts: 1, workerId: 'tw1', resultPtr: `redis://res:${job.id}`, dispatch: { attempt: 1, published: true, subject: 'worker.tw1.jobs', workerId: 'tw1' } });
    expect(worker.count(job.id)).toBe(1);
    const exec = worker.executions.get(job.id)![0]!;
    expect(exec.subject).toBe('worker.tw1.jobs');
    expect(exec.request.dispatch?.dispatchId).toBe(done.dispatch?.dispatchId);
    expect(exec.request.contextPtr).toBe(`redis://ctx:${job.id}`);
    expect(await redis.pttl(jobKeys.res(job.id))).toBeGreaterThan(0); // D45
    expect(await store.readResult(done)).toEqual({ echo: job.id, worker_id: 'tw1' });
    expect(kernel.checks.some((c) => c.jobId === job.id)).toBe(true);
    // D15 broadcasts, in commit order
    await waitFor(() => states.get(job.id)?.includes('SUCCEEDED'), 5_000);
    const seen = states.get(job.id)!;
    expect(seen.slice(0, 2)).toEqual(['SCHEDULED', 'DISPATCHED']);
    expect(seen[seen.length - 1]).toBe('SUCCEEDED');
    const jobsTotal = await metrics.getSingleMetric('cordum_jobs_total')?.get();
    expect(jobsTotal?.values.find((v) => v.labels['state'] === 'SUCCEEDED')?.value).toBeGreaterThanOrEqual(1);
  });

  it('builds the dispatched request from the record, never from the submit packet, whose fields nobody checked (P187)', async () => {
    const job = await store.createJob({ ...newJob('job.echo'), labels: { team: 'a' } });
    // A submit for a real job id carrying fields of its own: env, adapter, meta, labels, tenant.
    const forged = create(JobRequestSchema, {
      jobId: job.id,
      topic: job.topic,
      contextPtr: job.contextPtr,
      tenantId: 'other',
      principalId: 'mallory',
      adapterId: 'shell',
      env: { PATH: '/evil' },
      labels: { team: 'evil' },
      meta: { capability: 'rm-rf', tenantId: 'other', riskTags: ['none'] },
    });
    await bus.publish(subjects.submit, encodePacket(newPacket('anyone', { case: 'jobRequest', value: forged }, job.traceId)));
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED' });
    const req = worker.executions.get(job.id)![0]!.request;
    expect(req).toMatchObject({ jobId: job.id, tenantId: 'acme', principalId: 'tester', adapterId: '', env: {}, labels: { team: 'a' } });
    expect(req.meta).toMatchObject({ tenantId: 'acme', capability: '', riskTags: [], labels: { team: 'a' } });
  });

  it('ends a denied topic DENIED with a DLQ entry and no execution', async () => {
    const job = await submit('job.denied');
    await waitFor(async () => (await stateOf(job.id)) === 'DENIED', 15_000, { message: 'job DENIED' });
    // D14: the DLQ entry follows the terminal write
    await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry' });
    expect(await waitFor(() => store.getDlq(job.id), 5_000, { message: 'DLQ entry (written just after the state)' })).toMatchObject({ job_id: job.id, reason_code: 'policy_denied', last_state: 'DENIED', reason: 'topic blocked in test' });
    expect((await store.getJob(job.id))?.safety).toEqual({ decision: 'deny', reason: 'topic blocked in test', ruleId: 'deny-test', policySnapshot: 'snap-test' });
    expect(worker.count(job.id)).toBe(0);
    // P238: the entry, and the dead job's record (P74), live the configured DLQ_TTL, not 30 d
    for (const key of [jobKeys.dlqEntry(job.id), jobKeys.meta(job.id)]) {
      const ttl = await redis.pttl(key);
      expect({ key, longerThan2hMinus1m: ttl > 7_140_000, atMost2h: ttl <= 7_200_000 }).toEqual({ key, longerThan2hMinus1m: true, atMost2h: true });
    }
    // D14: and the sys.job.dlq notice after it, from this scheduler
    const notice = await waitFor(() => dlqNotices.find((p) => p.payload.case === 'jobResult' && p.payload.value.jobId === job.id), 5_000, { message: 'dlq notice' });
    expect(notice.senderId).toBe('sched-test');
    expect(notice.payload.value).toMatchObject({ status: JobStatus.DENIED, errorCode: 'policy_denied', errorMessage: 'topic blocked in test' });
  });

  it('publishes the sys.job.dlq notice of a job its worker failed, with the attempt', async () => {
    const job = await submit('job.manual');
    await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 15_000, { message: 'job RUNNING after start ack' });
    const req = worker.executions.get(job.id)![0]!.request;
    await worker.reply(req, JobStatus.FAILED_FATAL);
    await waitFor(async () => (await stateOf(job.id)) === 'FAILED', 10_000, { message: 'job FAILED' });
    const notice = await waitFor(() => dlqNotices.find((p) => p.payload.case === 'jobResult' && p.payload.value.jobId === job.id), 5_000, { message: 'dlq notice' });
    if (notice.payload.case !== 'jobResult') throw new Error('not a JobResult');
    expect(notice.payload.value).toMatchObject({ status: JobStatus.FAILED, errorCode: 'test_failure', workerId: 'tw1' });
    expect(notice.payload.value.dispatch?.dispatchId).toBe(req.dispatch?.dispatchId);
    expect(await store.getDlq(job.id)).toMatchObject({ reason_code: 'test_failure', last_state: 'FAILED' });
  });

  it('moves DISPATCHED → RUNNING on the start ack and ignores a result for a stale dispatch id', async () => {
    const job = await submit('job.manual');
    await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 15_000, { message: 'job RUNNING after start ack' });
    const req = worker.executions.get(job.id)![0]!.request;
    const before = await ignoredCount('result', 'stale_dispatch');
    await worker.reply(req, JobStatus.SUCCEEDED, { dispatchId: 'not-the-current-dispatch' });
    await waitFor(async () => (await ignoredCount('result', 'stale_dispatch')) > before, 10_000, { message: 'stale result counted' });
    expect(await stateOf(job.id)).toBe('RUNNING');
    expect((await store.getJob(job.id))?.resultPtr).toBeUndefined();
    await worker.reply(req, JobStatus.SUCCEEDED);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'current result applied' });
    expect(worker.count(job.id)).toBe(1);
  });

  it('a result for a job still DISPATCHED (no start ack came) is written through RUNNING without taking the lock: RUNNING is broadcast and counted', async () => {
    const job = await submit('job.silent');
    await waitFor(() => worker.count(job.id) === 1 && states.get(job.id)?.includes('DISPATCHED'), 15_000, { message: 'job dispatched' });
    expect(await stateOf(job.id)).toBe('DISPATCHED');
    const transitionsBefore = await jobsTotal('RUNNING');
    const fence = await redis.get(jobKeys.fence(job.id));
    await worker.reply(worker.executions.get(job.id)![0]!.request, JobStatus.SUCCEEDED);
    await waitFor(() => states.get(job.id)?.includes('SUCCEEDED'), 10_000, { message: 'SUCCEEDED broadcast' });
    // Applied by the lock-free finish script: no lock was taken (every acquire INCRs the fence, D4).
    expect(await redis.get(jobKeys.fence(job.id))).toBe(fence);
    expect(await redis.pttl(jobKeys.res(job.id))).toBeGreaterThan(0); // D45
    expect(states.get(job.id)).toEqual(['SCHEDULED', 'DISPATCHED', 'RUNNING', 'SUCCEEDED']);
    expect(await jobsTotal('RUNNING')).toBe(transitionsBefore + 1);
    const done = (await store.getJob(job.id))!;
    expect(done).toMatchObject({ state: 'SUCCEEDED', resultPtr: `redis://res:${job.id}` });
    // The job's indexes end where a RUNNING step would have left them: only the terminal one.
    expect(await redis.zscore(jobKeys.indexState('acme', 'SUCCEEDED'), job.id)).not.toBeNull();
    for (const s of ['DISPATCHED', 'RUNNING'] as const) {
      expect(await redis.zscore(jobKeys.indexState('acme', s), job.id)).toBeNull();
      expect(await redis.zscore(jobKeys.active(s), job.id)).toBeNull();
    }
  });

  const intakeWait = (): Promise<{ count: number; sum: number }> => rig.histogram('cordum_scheduler_intake_wait_seconds');

  it('times created → picked up in cordum_scheduler_intake_wait_seconds, once per job', async () => {
    // A record written 2 s before its submit reaches the scheduler (a gateway, or the bus, that was slow).
    const aged = createJobStore(redis, { jobTtlMs: 60_000, now: () => Date.now() - 2_000 });
    const job = await aged.createJob(newJob('job.echo'));
    const before = await intakeWait();
    await publishSubmit(job);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED' });
    const after = await intakeWait();
    expect(after.count - before.count).toBe(1);
    expect(after.sum - before.sum).toBeGreaterThanOrEqual(2);
    expect(after.sum - before.sum).toBeLessThan(10);
    // The lock wait it took is timed in the job path's buckets too (passed to the locks).
    const text = await (await fetch(`http://127.0.0.1:${scheduler.httpPort}/metrics`)).text();
    for (const le of ['0.002', '30']) expect(text).toMatch(new RegExp(`^cordum_scheduler_job_lock_wait_seconds_bucket\\{[^}]*le="${le}"[^}]*\\} \\d`, 'm'));
  });

  it('does not dispatch twice for a duplicate submit packet', async () => {
    const job = await store.createJob(newJob('job.echo'));
    const waitsBefore = (await intakeWait()).count;
    const dupBefore = (await ignoredCount('submit', 'duplicate')) + (await ignoredCount('submit', 'terminal'));
    // Two distinct packets for the same job (no shared msg id, so JetStream keeps both).
    await Promise.all([publishSubmit(job), publishSubmit(job)]);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED' });
    await waitFor(async () => (await ignoredCount('submit', 'duplicate')) + (await ignoredCount('submit', 'terminal')) > dupBefore, 10_000, { message: 'duplicate submit dropped' });
    expect(worker.count(job.id)).toBe(1);
    expect((await store.getJob(job.id))?.attempts).toBe(1);
    // The job was picked up once: the packet that found it past PENDING is not an intake wait.
    expect((await intakeWait()).count - waitsBefore).toBe(1);
  });

  it('a submit and a result for a job with no record are acked, and the fence counter their lock created gets the job TTL', async () => {
    const id = `gone-${process.pid}-${++seq}`;
    const submitsBefore = await ignoredCount('submit', 'unknown_job');
    const resultsBefore = await ignoredCount('result', 'unknown_job');
    const req = create(JobRequestSchema, { jobId: id, topic: 'job.echo', contextPtr: `redis://ctx:${id}`, tenantId: 'acme' });
    await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, 'trace-gone')), { msgId: `jobreq:${id}:0:0` });
    await waitFor(async () => (await ignoredCount('submit', 'unknown_job')) > submitsBefore, 10_000, { message: 'submit for a missing record acked' });
    expect(await redis.pttl(jobKeys.fence(id))).toBeGreaterThan(0);
    await redis.persist(jobKeys.fence(id));
    const res = create(JobResultSchema, { jobId: id, status: JobStatus.SUCCEEDED, workerId: 'tw1' });
    await bus.publish(subjects.result, encodePacket(newPacket('worker-test', { case: 'jobResult', value: res }, 'trace-gone')), { msgId: `res:${id}:x` });
    await waitFor(async () => (await ignoredCount('result', 'unknown_job')) > resultsBefore, 10_000, { message: 'result for a missing record acked' });
    expect(await redis.pttl(jobKeys.fence(id))).toBeGreaterThan(0);
    expect(await redis.exists(jobKeys.meta(id))).toBe(0);
    expect(await redis.exists(jobKeys.lock(id))).toBe(0);
  });

  describe('sys.job.cancel (CONTRACT §3: the scheduler has a durable on it)', () => {
    const publishCancel = (jobId: string, reason = '', requestedBy = 'workflow-engine', dispatchId = '') =>
      bus.publish(subjects.cancel, encodePacket(newPacket('cancel-test', { case: 'jobCancel', value: create(JobCancelSchema, { jobId, reason, requestedBy, ...(dispatchId ? { dispatch: { dispatchId } } : {}) }) })));
    /** JobCancels seen on sys.job.cancel (ours and the scheduler's), by job. */
    const cancelsSeen: { jobId: string; dispatchId: string; requestedBy: string }[] = [];
    let cancelSub: Subscription;
    beforeAll(async () => {
      cancelSub = bus.subscribe(subjects.cancel, (data) => {
        const p = decodePacket(data);
        if (p.payload.case === 'jobCancel') cancelsSeen.push({ jobId: p.payload.value.jobId, dispatchId: p.payload.value.dispatch?.dispatchId ?? '', requestedBy: p.payload.value.requestedBy });
      });
      await bus.flush();
    });
    afterAll(() => cancelSub.unsubscribe());
    const applied = async () => (await metrics.getSingleMetric('cordum_scheduler_cancels_applied_total')?.get())?.values[0]?.value ?? 0;

    it('a JobCancel from another publisher cancels a RUNNING job; its late result is ignored', async () => {
      const job = await submit('job.manual');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 15_000, { message: 'job RUNNING' });
      const before = await applied();
      await publishCancel(job.id, 'superseded by run 7');
      await waitFor(async () => (await stateOf(job.id)) === 'CANCELLED', 10_000, { message: 'job CANCELLED from the bus' });
      expect((await store.getJob(job.id))?.error).toEqual({ code: 'cancelled', message: 'superseded by run 7' });
      // Counted once the CANCELLED write (with its index moves) has answered, which the test can see first.
      await waitFor(async () => (await applied()) > before, 5_000, { message: 'the cancel counted' });
      expect(await applied()).toBe(before + 1);
      await waitFor(() => states.get(job.id)?.includes('CANCELLED'), 5_000, { message: 'CANCELLED broadcast' });
      // The attempt out may have been dispatched after the cancel was published: the scheduler
      // sends the JobCancel for it, so its worker stops.
      const attempt = worker.executions.get(job.id)![0]!.request.dispatch?.dispatchId;
      await waitFor(() => cancelsSeen.some((c) => c.jobId === job.id && c.requestedBy === 'sched-test'), 5_000, { message: 'JobCancel for the attempt' });
      expect(cancelsSeen.find((c) => c.jobId === job.id && c.requestedBy === 'sched-test')?.dispatchId).toBe(attempt);
      const ignoredBefore = await ignoredCount('result', 'terminal');
      await worker.reply(worker.executions.get(job.id)![0]!.request, JobStatus.SUCCEEDED);
      await waitFor(async () => (await ignoredCount('result', 'terminal')) > ignoredBefore, 10_000, { message: 'late result ignored' });
      expect(await stateOf(job.id)).toBe('CANCELLED');
      expect(worker.count(job.id)).toBe(1);
    });

    it('a cancelled job\'s result key gets the job TTL: cancelled here, or by the gateway before its JobCancel (D45)', async () => {
      const ttlOk = async (id: string) => {
        const ttl = await redis.pttl(jobKeys.res(id));
        expect(ttl).toBeGreaterThan(rig.config.jobTtlMs - 60_000);
        expect(ttl).toBeLessThanOrEqual(rig.config.jobTtlMs);
      };
      // A worker that wrote its result (no TTL) before the cancel reached it.
      const job = await submit('job.manual');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 15_000, { message: 'job RUNNING' });
      await redis.set(jobKeys.res(job.id), '{"partial":true}');
      await publishCancel(job.id, 'not needed');
      await waitFor(async () => (await stateOf(job.id)) === 'CANCELLED', 10_000, { message: 'job CANCELLED from the bus' });
      await ttlOk(job.id);

      // The gateway writes CANCELLED under the job lock, then publishes its JobCancel: the scheduler finds the job terminal.
      const byGateway = await submit('job.manual');
      await waitFor(async () => (await stateOf(byGateway.id)) === 'RUNNING', 15_000, { message: 'second job RUNNING' });
      await redis.set(jobKeys.res(byGateway.id), '{"partial":true}');
      await redis.set(jobKeys.lock(byGateway.id), 'gateway-test:1', 'PX', 30_000);
      const w = await store.transition(byGateway.id, 'CANCELLED', { token: 'gateway-test:1', release: true, patch: { error: { code: 'cancelled', message: 'cancelled by API' } } });
      expect(w.ok).toBe(true);
      await ttlOk(byGateway.id); // P327: the terminal write itself sets it (it was left for the scheduler's cancel handler)
      const terminal = await ignoredCount('cancel', 'terminal');
      await publishCancel(byGateway.id, 'cancelled by API', 'gateway-test');
      await waitFor(async () => (await ignoredCount('cancel', 'terminal')) > terminal, 10_000, { message: 'gateway cancel acked' });
      await ttlOk(byGateway.id);
    });

    it('a JobCancel for an earlier attempt does not end the current one', async () => {
      const job = await submit('job.manual');
      await waitFor(async () => (await stateOf(job.id)) === 'RUNNING', 15_000, { message: 'job RUNNING' });
      const stale = await ignoredCount('cancel', 'stale_dispatch');
      await publishCancel(job.id, 'for attempt 0', 'client-8', 'an-earlier-dispatch');
      await waitFor(async () => (await ignoredCount('cancel', 'stale_dispatch')) === stale + 1, 10_000, { message: 'stale cancel ignored' });
      expect(await stateOf(job.id)).toBe('RUNNING');
      await worker.reply(worker.executions.get(job.id)![0]!.request, JobStatus.SUCCEEDED);
      await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 10_000, { message: 'current attempt finished' });
    });

    it('a PENDING job cancelled before its submit is consumed never runs; a cancel for a finished or unknown job changes nothing', async () => {
      const job = await store.createJob(newJob('job.echo')); // its submit is published only after the cancel
      await publishCancel(job.id, '', 'client-7');
      await waitFor(async () => (await stateOf(job.id)) === 'CANCELLED', 10_000, { message: 'PENDING job CANCELLED' });
      expect((await store.getJob(job.id))?.error).toEqual({ code: 'cancelled', message: 'cancelled on the bus by client-7' });
      const terminalSubmits = await ignoredCount('submit', 'terminal');
      await publishSubmit(job);
      await waitFor(async () => (await ignoredCount('submit', 'terminal')) > terminalSubmits, 10_000, { message: 'submit of the cancelled job acked' });
      expect(worker.count(job.id)).toBe(0);

      const done = await submit('job.echo');
      await waitFor(async () => (await stateOf(done.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED' });
      // The gateway publishes its cancel while it still holds the job lock: a cancel for a job
      // already terminal is acked from a lock-free read, not NAKed until the lock is free.
      await redis.set(jobKeys.lock(done.id), 'gateway-holding:1', 'PX', 30_000);
      const [terminal, unknown, before] = [await ignoredCount('cancel', 'terminal'), await ignoredCount('cancel', 'unknown_job'), await applied()];
      await publishCancel(done.id);
      await publishCancel(`no-such-job-${process.pid}`);
      await waitFor(async () => (await ignoredCount('cancel', 'terminal')) === terminal + 1 && (await ignoredCount('cancel', 'unknown_job')) === unknown + 1, 10_000, { message: 'both cancels acked without effect' });
      expect(await stateOf(done.id)).toBe('SUCCEEDED');
      expect(await applied()).toBe(before);
      expect(await redis.get(jobKeys.lock(done.id))).toBe('gateway-holding:1');
      await redis.del(jobKeys.lock(done.id));
    });
  });

  it('redispatches a FAILED_RETRYABLE result as a new attempt, with the budget the job was submitted with', async () => {
    const job = await store.createJob({ ...newJob('job.flaky'), deadlineMs: 60_000 });
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant, budget: { deadlineMs: 60_000n } });
    await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)));
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'job SUCCEEDED after retry' });
    const runs = worker.executions.get(job.id)!;
    expect(runs).toHaveLength(2);
    // The retry is built from the record, not the submit: its deadline_ms is still relative to submit (D46).
    expect(runs.map((r) => r.request.budget?.deadlineMs)).toEqual([60_000n, 60_000n]);
    expect(runs[0]!.request.dispatch?.attempt).toBe(1n);
    expect(runs[1]!.request.dispatch?.attempt).toBe(2n);
    expect(runs[0]!.request.dispatch?.dispatchId).not.toBe(runs[1]!.request.dispatch?.dispatchId);
    expect((await store.getJob(job.id))?.attempts).toBe(2);
    expect(states.get(job.id)).toContain('RETRYING');
  });

  it('republishes an unpublished attempt with the same dispatch id after its owner died (D2)', async () => {
    const job = await store.createJob(newJob('job.echo'));
    // A dead replica got as far as DISPATCHED(published=false) and then lost its lock.
    await redis.set(jobKeys.lock(job.id), 'dead-replica:1', 'PX', 30_000);
    const token = 'dead-replica:1';
    expect((await store.transition(job.id, 'SCHEDULED', { token })).ok).toBe(true);
    const d = { dispatchId: 'orphan-dispatch', attempt: 1, published: false, subject: 'job.echo' };
    expect((await store.transition(job.id, 'DISPATCHED', { token, patch: { dispatch: d, attempts: 1 } })).ok).toBe(true);
    await redis.del(jobKeys.lock(job.id));
    await publishSubmit(job);
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 15_000, { message: 'orphan attempt completed' });
    expect(worker.count(job.id)).toBe(1);
    expect(worker.executions.get(job.id)![0]!.request.dispatch?.dispatchId).toBe('orphan-dispatch');
    expect((await store.getJob(job.id))).toMatchObject({ attempts: 1, dispatch: { dispatchId: 'orphan-dispatch', published: true } });
  });

  it('fails closed while the kernel is unavailable and dispatches once it answers again (D19, D21)', async () => {
    kernel.failing = true;
    const job = await submit('job.echo');
    await waitFor(() => kernel.checks.some((c) => c.jobId === job.id), 10_000, { message: 'Check attempted' });
    expect(await stateOf(job.id)).toBe('PENDING');
    expect(worker.count(job.id)).toBe(0);
    kernel.failing = false;
    // held with a 5 s NAK, then re-checked
    await waitFor(async () => (await stateOf(job.id)) === 'SUCCEEDED', 20_000, { message: 'job SUCCEEDED after kernel recovery' });
    expect(kernel.checks.filter((c) => c.jobId === job.id).length).toBeGreaterThanOrEqual(2);
    expect(worker.count(job.id)).toBe(1);
  }, 30_000);

  it('serves /healthz, /readyz and /metrics', async () => {
    const base = `http://127.0.0.1:${scheduler.httpPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, checks: { redis: true, nats: true, jetstream: true, consumers: true } });
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toContain('cordum_scheduler_dispatch_latency_seconds');
    expect(text).toContain('cordum_scheduler_job_lock_wait_seconds');
    expect(text).toContain('cordum_scheduler_intake_wait_seconds_bucket{le="0.002"}');
  });
});
