// The scheduler's side of approvals and fail modes, in-process against real
// Redis + NATS and an in-test kernel: D18 (an approval counts only for the rule
// it was given for and only while the request hashes the same; DENY wins) and
// input_fail_mode (closed holds, open runs the job with one audit alert).
import { subjects, type Bus, type Consumer } from '@cordum/bus';
import { jobKeys, type ApprovalRecord, type JobRecord, type JobStore, type NewJob } from '@cordum/job-store';
import {
  Decision,
  SystemAlertSchema,
  create,
  decodePacket,
  encodePacket,
  newPacket,
  type PolicyCheckRequest,
} from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { waitFor, type TestServer } from '@cordum/testing';
import type { Registry } from 'prom-client';
import { FAIL_OPEN_ALERT_CODE } from '../src/safety';
import { SAFETY_BREAKER_KEY } from '../src/safety-breaker';
import type { Scheduler } from '../src/scheduler';
import { startTestKernel, startTestWorker, type KernelAnswer, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let natsServer: TestServer;
let redis: RedisClient;
let bus: Bus;
let store: JobStore;
let worker: TestWorker;
let scheduler: Scheduler;
let metrics: Registry;
let testKernel: TestKernel;
let auditConsumer: Consumer;
const alerts: { code: string; jobId: string }[] = [];
/** topic → verdict (`testKernel.failing` makes every call UNAVAILABLE). */
const kernel = { holdRule: 'hold-prod', denyHeld: false };
let seq = 0;
/** What the scheduler's store saw right after each APPROVAL_REQUIRED write returned (P47). */
const holdWrites: { id: string; lockHeld: boolean; inActivePending: boolean; recordTtlMs: number }[] = [];
const wrapStore = (s: JobStore): JobStore => ({
  ...s,
  async transition(id, to, o) {
    const r = await s.transition(id, to, o);
    if (to === 'APPROVAL_REQUIRED' && r.ok) {
      holdWrites.push({ id, lockHeld: (await redis.exists(jobKeys.lock(id))) === 1, inActivePending: (await redis.zscore(jobKeys.active('PENDING'), id)) !== null, recordTtlMs: await redis.pttl(jobKeys.meta(id)) });
    }
    return r;
  },
});

function decide(req: PolicyCheckRequest): KernelAnswer {
  const base = { policySnapshot: 'snap-1' };
  if (req.topic.startsWith('job.held')) {
    if (kernel.denyHeld) return { ...base, decision: Decision.DENY, ruleId: 'deny-now', reason: 'now denied' };
    return { ...base, decision: Decision.REQUIRE_HUMAN, ruleId: kernel.holdRule, reason: 'production needs a human', approvalRequired: true };
  }
  return { ...base, decision: Decision.ALLOW, ruleId: 'allow-all', reason: 'ok' };
}

beforeAll(async () => {
  testKernel = await startTestKernel(decide);
  rig = await startSchedulerRig({ instanceId: 'sched-safety', kernelAddress: testKernel.address, deps: { wrapStore } });
  ({ natsServer, redis, store, scheduler, metrics, bus } = rig);
  auditConsumer = await bus.consume({
    subject: subjects.audit,
    queue: 'audit-test',
    decode: decodePacket,
    handler: async (p) => {
      if (p.payload.case === 'alert') alerts.push({ code: p.payload.value.code, jobId: p.payload.value.details['job_id'] ?? '' });
      return { kind: 'ack' };
    },
  });
  worker = await startTestWorker({ natsUrl: natsServer.url, redis, id: 'tw-safety', topics: ['job.echo', 'job.held.deploy'], replyFor: () => 'succeed' });
  await waitFor(() => scheduler.workers.live().some((w) => w.workerId === 'tw-safety'), 10_000, { message: 'worker registered' });
}, 60_000);

afterAll(async () => {
  await auditConsumer?.stop();
  await worker?.stop();
  await rig?.stop();
  await testKernel?.stop();
});

function newJob(topic: string, initialState: NewJob['initialState']): NewJob {
  seq += 1;
  return { id: `si-${process.pid}-${seq}`, tenant: 'acme', topic, traceId: `t-${seq}`, priority: 'interactive', labels: { env: 'prod' }, prompt: `deploy ${seq}`, context: { v: seq }, principalId: 'alice', riskTags: [], requires: [], initialState };
}

const publishSubmit = (job: JobRecord, revision = 0): Promise<void> => rig.publishSubmit(job, revision);

/** The gateway's approve (rig.approve), by bob for the hold-prod rule unless `over` says otherwise. */
async function approve(job: JobRecord, over: Partial<ApprovalRecord> = {}): Promise<void> {
  await rig.approve(job, { status: 'approved', by: 'bob', at: Date.now(), jobHash: job.holdHash ?? '', policySnapshot: 'snap-1', ruleId: 'hold-prod', revision: 1, ...over });
}

const stateOf = async (id: string) => (await store.getJob(id))?.state;

describe('D18 approval re-check at intake', () => {
  it('a job held by the gateway carries the hash of its request; the matching approval runs it exactly once', async () => {
    const held = await store.createJob(newJob('job.held.deploy', 'APPROVAL_REQUIRED'));
    expect(held.holdHash).toMatch(/^[0-9a-f]{64}$/);
    expect(await store.requestHash(held)).toBe(held.holdHash);
    await publishSubmit(held); // a held job is not driven
    await approve(held);
    await waitFor(async () => (await stateOf(held.id)) === 'SUCCEEDED', 15_000, { message: 'approved job SUCCEEDED' });
    expect(worker.count(held.id)).toBe(1);
    const done = await store.getJob(held.id);
    expect(done?.safety).toEqual({ decision: 'require_human', reason: 'approved by bob: production needs a human', ruleId: 'hold-prod', policySnapshot: 'snap-1' });
  });

  it('a PENDING job the kernel holds goes to APPROVAL_REQUIRED with its request hash', async () => {
    const job = await store.createJob(newJob('job.held.deploy', 'PENDING'));
    await publishSubmit(job);
    await waitFor(async () => (await stateOf(job.id)) === 'APPROVAL_REQUIRED', 10_000, { message: 'held' });
    const held = (await store.getJob(job.id))!;
    expect(held.holdHash).toBe(await store.requestHash(held));
    expect(worker.count(job.id)).toBe(0);
  });

  it('a job held for approval leaves job:active:PENDING while the scheduler still holds its lock, so an approval cannot interleave (P47)', async () => {
    const job = await store.createJob(newJob('job.held.deploy', 'PENDING'));
    await publishSubmit(job);
    await waitFor(() => holdWrites.some((w) => w.id === job.id), 10_000, { message: 'held' });
    // Before P47 the hold's write released the lock in the same script, ahead of the index move.
    expect(holdWrites.find((w) => w.id === job.id)).toMatchObject({ id: job.id, lockHeld: true, inActivePending: false });
    await waitFor(async () => (await redis.exists(jobKeys.lock(job.id))) === 0, 5_000, { message: 'lock released after the index move' });
    expect(await stateOf(job.id)).toBe('APPROVAL_REQUIRED');
  });

  it('a hold gives the record the whole job TTL before it is written, so a crash right after the write cannot leave a short-lived hold (P275)', async () => {
    const job = await store.createJob(newJob('job.held.deploy', 'PENDING'));
    // An old job: a minute of record left. Before P275 the refresh came after the hold's write,
    // so a scheduler killed in between left a hold whose record expired before its hold timeout.
    await redis.pexpire(jobKeys.meta(job.id), 60_000);
    await publishSubmit(job);
    await waitFor(() => holdWrites.some((w) => w.id === job.id), 10_000, { message: 'held' });
    expect(holdWrites.find((w) => w.id === job.id)?.recordTtlMs).toBeGreaterThan(30 * 60_000); // the rig's job TTL is 1 h
  });

  it('an approval for a request that changed since (ctx rewritten) is not honoured: held again, bound to the new hash', async () => {
    const held = await store.createJob(newJob('job.held.deploy', 'APPROVAL_REQUIRED'));
    await redis.set(jobKeys.ctx(held.id), JSON.stringify({ prompt: 'rm -rf /', context: null }));
    await approve(held);
    await waitFor(async () => (await stateOf(held.id)) === 'APPROVAL_REQUIRED', 10_000, { message: 'held again' });
    const again = (await store.getJob(held.id))!;
    expect(again.holdHash).not.toBe(held.holdHash);
    expect(again.holdHash).toBe(await store.requestHash(again));
    // P258: the approval stays on the record, marked as not covering this hold.
    expect(again.approval).toMatchObject({ status: 'approved', superseded: true });
    expect(worker.count(held.id)).toBe(0);
  });

  it('an approval for another rule is not honoured, and DENY wins over an approval', async () => {
    const other = await store.createJob(newJob('job.held.deploy', 'APPROVAL_REQUIRED'));
    await approve(other, { ruleId: 'some-older-rule' });
    await waitFor(async () => (await stateOf(other.id)) === 'APPROVAL_REQUIRED', 10_000, { message: 'held again' });

    const denied = await store.createJob(newJob('job.held.deploy', 'APPROVAL_REQUIRED'));
    kernel.denyHeld = true;
    try {
      await approve(denied);
      await waitFor(async () => (await stateOf(denied.id)) === 'DENIED', 10_000, { message: 'denied' });
    } finally {
      kernel.denyHeld = false;
    }
    expect(await waitFor(() => store.getDlq(denied.id), 5_000, { message: 'DLQ entry (written just after the state)' })).toMatchObject({ reason_code: 'policy_denied' });
    expect(worker.count(other.id) + worker.count(denied.id)).toBe(0);
  });
});

describe('input_fail_mode', () => {
  afterEach(async () => {
    testKernel.failing = false;
    scheduler.setFailModes({ inputFailMode: 'closed', outputFailMode: 'closed', outputPolicyEnabled: false });
    await redis.del(SAFETY_BREAKER_KEY);
  });

  it('open: with the kernel down jobs run, each with one audit alert on sys.audit.export, recorded as decision unavailable', async () => {
    testKernel.failing = true;
    const shown = async () => ((await metrics.getSingleMetric('cordum_scheduler_fail_mode_info')?.get())?.values ?? []).map((v) => ({ ...v.labels, value: v.value }));
    expect(await shown()).toEqual([{ input: 'closed', output: 'closed', value: 1 }]);
    scheduler.setFailModes({ inputFailMode: 'open', outputFailMode: 'closed', outputPolicyEnabled: false });
    expect(scheduler.failModes.inputFailMode).toBe('open');
    // The mode applied is a metric (one series), since /config/status cannot see an env default (P112).
    expect(await shown()).toEqual([{ input: 'open', output: 'closed', value: 1 }]);
    const jobs = await Promise.all(Array.from({ length: 5 }, () => store.createJob(newJob('job.echo', 'PENDING'))));
    for (const j of jobs) await publishSubmit(j);
    await waitFor(async () => (await Promise.all(jobs.map((j) => stateOf(j.id)))).every((s) => s === 'SUCCEEDED'), 15_000, { message: 'jobs ran fail-open' });
    await waitFor(() => jobs.every((j) => alerts.some((a) => a.jobId === j.id)), 5_000, { message: 'alerts' });
    // Barrier before counting: a sentinel alert published now is consumed after any earlier one.
    await bus.publish(subjects.audit, encodePacket(newPacket('test', { case: 'alert', value: create(SystemAlertSchema, { code: 'sentinel', details: { job_id: 'sentinel-alert' } }) })));
    await waitFor(() => alerts.some((a) => a.jobId === 'sentinel-alert'), 10_000, { message: 'sentinel alert consumed' });
    for (const j of jobs) {
      expect(worker.count(j.id)).toBe(1);
      expect(alerts.filter((a) => a.jobId === j.id)).toEqual([{ code: FAIL_OPEN_ALERT_CODE, jobId: j.id }]);
      expect((await store.getJob(j.id))?.safety?.decision).toBe('unavailable');
      // P222: the tenant reads this reason; it names the gRPC status, not the kernel's address or grpc-js's text
      expect((await store.getJob(j.id))?.safety?.reason).toMatch(/^allowed by input_fail_mode=open: /);
      expect((await store.getJob(j.id))?.safety?.reason).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|:\d{2,5}\b|No connection/);
    }
    const failOpen = (await metrics.getSingleMetric('cordum_scheduler_safety_fail_open_total')?.get())?.values[0]?.value;
    expect(failOpen).toBe(5);
    // 3 failures opened the shared breaker; later jobs were allowed without calling the kernel
    const state = (await metrics.getSingleMetric('cordum_scheduler_safety_breaker_state')?.get())?.values[0]?.value;
    expect(state).toBe(2);
  });

  it('closed: with the kernel down nothing runs and no alert is emitted', async () => {
    testKernel.failing = true;
    const job = await store.createJob(newJob('job.echo', 'PENDING'));
    const before = alerts.length;
    // Checks that found no kernel answer (unavailable, or refused by the breaker the failures open).
    const failedChecks = async () =>
      ((await metrics.getSingleMetric('cordum_scheduler_safety_checks_total')?.get())?.values ?? [])
        .filter((v) => v.labels['outcome'] === 'unavailable' || v.labels['outcome'] === 'breaker_open')
        .reduce((sum, v) => sum + v.value, 0);
    const checked = await failedChecks();
    await publishSubmit(job);
    // The second failed Check is the redelivery of the first one's delayed NAK, which comes only
    // once the first handling is over: whatever it would have dispatched or alerted is done by now.
    await waitFor(async () => (await failedChecks()) >= checked + 2, 15_000, { message: 'Check failed twice for the job' });
    expect(await stateOf(job.id)).toBe('PENDING');
    expect(worker.count(job.id)).toBe(0);
    expect(alerts.length).toBe(before);
  }, 30_000);
});
