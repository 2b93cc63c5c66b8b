// input_fail_mode: open is for a kernel that cannot be asked (down, too slow, not ready), not
// for one that answered an error for the job. Before, every failed Check was "unavailable": a
// job whose rule the kernel could not answer (an answer past int32, INTERNAL) ran fail-open,
// and three of them opened the shared breaker, after which every job ran fail-open, deny
// rules included. In-process against real Redis + NATS and an in-test kernel.
import { subjects, type Bus } from '@cordum/bus';
import type { JobRecord, JobStore, NewJob } from '@cordum/job-store';
import { Decision, GrpcStatus, JobRequestSchema, create, encodePacket, grpcError, newPacket, type PolicyCheckRequest } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { Registry } from 'prom-client';
import { createSchedulerMetrics } from '../src/metrics';
import { verdictFromError, type SafetyChecker, type SafetyVerdict } from '../src/safety';
import { D21_BREAKER, SAFETY_BREAKER_KEY, breakerSafetyChecker, createSharedBreaker } from '../src/safety-breaker';
import type { Scheduler } from '../src/scheduler';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let redis: RedisClient;
let bus: Bus;
let store: JobStore;
let worker: TestWorker;
let scheduler: Scheduler;
let metrics: Registry;
let testKernel: TestKernel;
let seq = 0;

const TOPICS = ['job.echo', 'job.batch.train', 'job.bad-arg', 'job.unspecified', 'job.admin.delete-all'];

function decide(req: PolicyCheckRequest): KernelAnswer {
  const base = { policySnapshot: 'snap-1', reason: '' };
  switch (req.topic) {
    case 'job.batch.train':
      // What a rule with max_concurrent_jobs past int32 answered: the kernel's Decide handler
      // cannot encode it and answers this request INTERNAL.
      return { ...base, decision: Decision.ALLOW_WITH_CONSTRAINTS, ruleId: 'gpu-batch', constraints: { maxConcurrentJobs: 3_000_000_000 } };
    case 'job.bad-arg':
      throw grpcError(GrpcStatus.INVALID_ARGUMENT, 'policy load error (test)');
    case 'job.unspecified':
      return { ...base, decision: Decision.UNSPECIFIED, ruleId: '' };
    case 'job.admin.delete-all':
      return { ...base, decision: Decision.DENY, ruleId: 'deny-admin', reason: 'no' };
    default:
      return { ...base, decision: Decision.ALLOW, ruleId: 'allow-all', reason: 'ok' };
  }
}

beforeAll(async () => {
  testKernel = await startTestKernel(decide);
  rig = await startSchedulerRig({ instanceId: 'sched-kernel-error', kernelAddress: testKernel.address });
  ({ redis, store, scheduler, metrics, bus } = rig);
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis, id: 'tw-kernel-error', topics: TOPICS, replyFor: () => 'succeed' });
  await waitFor(() => scheduler.workers.live().some((w) => w.workerId === 'tw-kernel-error'), 10_000, { message: 'worker registered' });
  scheduler.setFailModes({ inputFailMode: 'open', outputFailMode: 'closed', outputPolicyEnabled: false });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await testKernel?.stop();
});

function newJob(topic: string): NewJob {
  seq += 1;
  return { id: `ke-${process.pid}-${seq}`, tenant: 'acme', topic, traceId: `t-${seq}`, priority: 'interactive', labels: {}, prompt: `p ${seq}`, context: { v: seq }, principalId: 'alice', riskTags: [], requires: [], initialState: 'PENDING' };
}

async function publishSubmit(id: string, topic: string, tenant: string): Promise<void> {
  const req = create(JobRequestSchema, { jobId: id, topic, tenantId: tenant });
  await bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req })), { msgId: `jobreq:${id}:0:0` });
}

const counter = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
  ((await metrics.getSingleMetric(name)?.get())?.values ?? []).filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);

describe('verdictFromError', () => {
  it('fail mode applies to UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED only; every other failure is held', () => {
    const err = (code: number | undefined, details = 'x') => Object.assign(new Error(`${code} ${details}`), { code, details });
    for (const code of [GrpcStatus.UNAVAILABLE, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.CANCELLED]) expect(verdictFromError(err(code))).toEqual({ kind: 'unavailable', error: `${code} x`, publicError: GrpcStatus[code] });
    // P222: what a job record and a tenant's alert may carry: the status, not the kernel's address
    const refused = err(GrpcStatus.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 10.0.3.7:50051');
    expect(verdictFromError(refused)).toMatchObject({ error: expect.stringContaining('10.0.3.7:50051'), publicError: 'UNAVAILABLE' });
    expect(verdictFromError(err(GrpcStatus.UNAVAILABLE, 'kernel not ready: the stored safety section is refused'))).toMatchObject({ publicError: 'UNAVAILABLE: kernel not ready: the stored safety section is refused' });
    // the kernel's readiness refusal (P48) is unavailability
    expect(verdictFromError(err(GrpcStatus.UNAVAILABLE, 'kernel not ready: the policy bundles in config are not loaded yet'))).not.toHaveProperty('kernelError');
    for (const code of [GrpcStatus.INTERNAL, GrpcStatus.UNKNOWN, GrpcStatus.INVALID_ARGUMENT, GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus.UNIMPLEMENTED, GrpcStatus.PERMISSION_DENIED, undefined]) {
      expect(verdictFromError(err(code))).toMatchObject({ kind: 'unavailable', kernelError: true });
    }
    expect(verdictFromError(err(GrpcStatus.INTERNAL))).toMatchObject({ error: expect.stringMatching(/^kernel error INTERNAL, not unavailability \(held whatever input_fail_mode says\): /) });
  });
});

describe('a kernel error with input_fail_mode open', () => {
  afterEach(async () => {
    await redis.del(SAFETY_BREAKER_KEY);
  });

  it('holds the job (INTERNAL, INVALID_ARGUMENT, DECISION_UNSPECIFIED), emits no fail-open, and does not open the breaker', async () => {
    expect(scheduler.failModes.inputFailMode).toBe('open');
    const failOpenBefore = await counter('cordum_scheduler_safety_fail_open_total');
    const errorsBefore = await counter('cordum_scheduler_safety_checks_total', { outcome: 'kernel_error' });
    const held = await Promise.all(['job.batch.train', 'job.batch.train', 'job.batch.train', 'job.bad-arg', 'job.unspecified'].map((t) => store.createJob(newJob(t))));
    for (const j of held) await publishSubmit(j.id, j.topic, j.tenant);
    // Each job Checked twice (the second is the redelivery after the hold's NAK, so whatever the
    // first handling would have dispatched is done by then), or run (fail-open, the old behaviour).
    const checksOf = (id: string): number => testKernel.checks.filter((c) => c.jobId === id).length;
    const settled = async (id: string): Promise<boolean> => checksOf(id) >= 2 || (await store.getJob(id))?.state === 'SUCCEEDED';
    await waitFor(async () => (await Promise.all(held.map((j) => settled(j.id)))).every(Boolean), 20_000, { message: 'every held job Checked twice' });
    for (const j of held) {
      expect((await store.getJob(j.id))?.state).toBe('PENDING');
      expect(worker.count(j.id)).toBe(0);
    }
    expect(await counter('cordum_scheduler_safety_fail_open_total')).toBe(failOpenBefore);
    // Counted when the kernel's error reaches the scheduler, after the test kernel saw the call.
    await waitFor(async () => (await counter('cordum_scheduler_safety_checks_total', { outcome: 'kernel_error' })) >= errorsBefore + 10, 5_000, { message: 'ten kernel errors counted' });
    // 10 failed Checks, none counted by the breaker: it is closed, with no failures in Redis
    expect(await counter('cordum_scheduler_safety_breaker_state')).toBe(0);
    expect(await redis.exists(SAFETY_BREAKER_KEY)).toBe(0);

    // so the kernel still decides the other jobs: a deny is denied, an allow runs as allowed
    const deny = await store.createJob(newJob('job.admin.delete-all'));
    const echo = await store.createJob(newJob('job.echo'));
    await publishSubmit(deny.id, deny.topic, deny.tenant);
    await publishSubmit(echo.id, echo.topic, echo.tenant);
    await waitFor(async () => (await store.getJob(deny.id))?.state === 'DENIED' && (await store.getJob(echo.id))?.state === 'SUCCEEDED', 15_000, { message: 'deny denied, echo ran' });
    expect(worker.count(deny.id)).toBe(0);
    expect((await store.getJob(echo.id))?.safety?.decision).toBe('allow');
  }, 45_000);
});

describe('the breaker and a kernel error', () => {
  afterEach(async () => {
    await redis.del(SAFETY_BREAKER_KEY);
  });

  it('neither counts it as a failure nor as a success (closed: the count stays; half-open: no close, no reopen)', async () => {
    let clock = 5_000_000;
    let next: SafetyVerdict = { kind: 'unavailable', error: 'down' };
    const inner: SafetyChecker = { check: async () => next, close: () => undefined };
    const checker = breakerSafetyChecker(inner, createSharedBreaker(redis, { ...D21_BREAKER, closedCacheMs: 0 }, () => clock), {
      metrics: createSchedulerMetrics(new Registry()),
      logger: createLogger({ service: 'sched', instance: 'x', level: 'error', write: () => undefined }),
    });
    const job = { id: 'j', tenant: 'acme', topic: 'job.echo' } as JobRecord;
    const kernelError: SafetyVerdict = { kind: 'unavailable', error: 'kernel error INTERNAL', kernelError: true };
    const allow: SafetyVerdict = { kind: 'allow', record: { decision: 'allow', reason: '', ruleId: 'r', policySnapshot: 's' } };

    // two real failures, then any number of kernel errors: still closed, still two failures
    await checker.check(job);
    await checker.check(job);
    next = kernelError;
    for (let i = 0; i < 5; i++) expect(await checker.check(job)).toBe(kernelError);
    expect(await redis.hget(SAFETY_BREAKER_KEY, 'f')).toBe('2');
    expect(await redis.hexists(SAFETY_BREAKER_KEY, 'ou')).toBe(0);
    // the third real failure opens it
    next = { kind: 'unavailable', error: 'down' };
    await checker.check(job);
    expect(await redis.hexists(SAFETY_BREAKER_KEY, 'ou')).toBe(1);

    // half-open: a probe that gets a kernel error neither closes nor reopens it
    clock += D21_BREAKER.openMs;
    const openUntil = await redis.hget(SAFETY_BREAKER_KEY, 'ou');
    next = kernelError;
    expect(await checker.check(job)).toBe(kernelError);
    expect(await redis.hget(SAFETY_BREAKER_KEY, 'ou')).toBe(openUntil);
    expect(await redis.hget(SAFETY_BREAKER_KEY, 's')).toBe('0');
    // two clean probes close it as before
    next = allow;
    for (let i = 0; i < 2; i++) {
      clock += D21_BREAKER.probeIntervalMs;
      expect(await checker.check(job)).toBe(allow);
    }
    expect(await redis.exists(SAFETY_BREAKER_KEY)).toBe(0);
  });
});
