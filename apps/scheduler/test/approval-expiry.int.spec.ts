// P99: a job held for approval that nobody approves or rejects within SCHEDULER_APPROVAL_TIMEOUT
// is DENIED `approval_expired` by the reconciler leader, with its DLQ entry, instead of staying
// held until its record expires with the job TTL (ending in no state at all).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createJobStore, jobKeys, type JobStore, type NewJob } from '@cordum/job-store';
import { subjects } from '@cordum/bus';
import { create, Decision, decodePacket, encodePacket, JobRequestSchema, newPacket, type SystemAlert } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';
import { SCAN_LIMIT } from '../src/reconciler';

const TIMEOUT_MS = 2_000;

describe('held jobs expire (in-process, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let store: JobStore;
  /** SystemAlerts on sys.audit.export (P336). */
  const audits: SystemAlert[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'sched-approval-'));
  let seq = 0;

  beforeAll(async () => {
    kernel = await startTestKernel(async (req) =>
      req.topic === 'job.rehold'
        ? { decision: Decision.REQUIRE_HUMAN, reason: 'needs a human now', ruleId: 'hold-now', policySnapshot: 'snap-test', approvalRequired: true }
        : { decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' },
    );
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  scan_interval_seconds: 0.2\n');
    rig = await startSchedulerRig({ instanceId: 'sched-approval', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts, SCHEDULER_APPROVAL_TIMEOUT: `${TIMEOUT_MS}ms` } });
    store = rig.store;
    rig.bus.subscribe(subjects.audit, (data) => {
      const p = decodePacket(data);
      if (p.payload.case === 'alert') audits.push(p.payload.value);
    });
    await rig.bus.flush();
  }, 60_000);

  afterAll(async () => {
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  const held = (tenant: string): NewJob => {
    seq += 1;
    return {
      id: `held-${process.pid}-${seq}`, tenant, topic: 'job.approve.me', traceId: `trace-${seq}`, priority: 'batch', labels: {}, prompt: 'hi', context: null,
      principalId: 'tester', riskTags: [], requires: [], initialState: 'APPROVAL_REQUIRED',
      safety: { decision: 'require_human', reason: 'needs a human', ruleId: 'hold-all', policySnapshot: 'snap-test' },
    };
  };
  const stateOf = async (id: string) => (await store.getJob(id))?.state;

  it('a job the intake holds gets the whole job TTL again, so its hold times out before its record expires', async () => {
    // created with a minute left (an old job, approved once, now held again by a changed policy)
    const short = createJobStore(rig.redis, { jobTtlMs: 60_000 });
    const j = await short.createJob({ ...held('acme'), topic: 'job.rehold', initialState: 'PENDING' });
    expect(await rig.redis.pttl(jobKeys.meta(j.id))).toBeLessThanOrEqual(60_000);
    const req = create(JobRequestSchema, { jobId: j.id, topic: j.topic, contextPtr: j.contextPtr, tenantId: j.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, j.traceId)), { msgId: `jobreq:${j.id}:0:0` });
    await waitFor(async () => (await stateOf(j.id)) === 'APPROVAL_REQUIRED', 10_000, { message: 'held by the intake' });
    // JOB_TTL of the rig is 1h; seen while still held (its 2 s hold timeout would end it DENIED,
    // and a terminal write sets the TTL anyway)
    await waitFor(async () => (await rig.redis.pttl(jobKeys.meta(j.id))) > 30 * 60_000, TIMEOUT_MS * 0.75, { message: 'record lifetime renewed at the hold' });
    expect(await stateOf(j.id)).toBe('APPROVAL_REQUIRED');
  });

  it('a hold older than the timeout ends DENIED approval_expired with its DLQ entry; a younger one is still held', async () => {
    const a = await store.createJob(held('acme'));
    // Held an hour from now (its clock): never due while this test runs, whatever the machine's load.
    const young = createJobStore(rig.redis, { jobTtlMs: 3_600_000, now: () => Date.now() + 3_600_000 });
    const b = await young.createJob(held('globex'));
    await waitFor(async () => (await stateOf(a.id)) === 'DENIED', 10_000, { message: 'the old hold expired' });
    // not before its time
    const ended = await store.getJob(a.id);
    expect(ended!.updatedAt - a.createdAt).toBeGreaterThanOrEqual(TIMEOUT_MS);
    expect(ended!.error).toEqual({ code: 'approval_expired', message: `no approval or rejection within ${TIMEOUT_MS / 1000}s of the hold` });
    const dlq = await waitFor(() => store.getDlq(a.id), 5_000, { message: 'DLQ entry' });
    expect(dlq).toMatchObject({ reason_code: 'approval_expired', last_state: 'DENIED' });
    // P336: the hold's end is audited like an approve or a reject (it was not at all).
    const audit = await waitFor(() => audits.find((x) => x.details['target'] === a.id), 5_000, { message: 'audit event exported' });
    expect({ code: audit.code, component: audit.component, sourceComponent: audit.sourceComponent }).toEqual({ code: 'audit.approval.expire', component: 'scheduler', sourceComponent: 'sched-approval' });
    expect(audit.details).toMatchObject({ tenant: 'acme', principal_id: 'system:scheduler', rule_id: 'hold-all', policy_snapshot: 'snap-test', reason: `no approval or rejection within ${TIMEOUT_MS / 1000}s of the hold` });
    expect(audit.details['audit_id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number(audit.details['held_ms'])).toBeGreaterThanOrEqual(TIMEOUT_MS);
    // it leaves the approvals listing (the index move follows the write, D16)
    await waitFor(async () => (await rig.redis.zscore(jobKeys.indexState('acme', 'APPROVAL_REQUIRED'), a.id)) === null, 5_000, { message: 'out of the approvals listing' });
    expect(await rig.redis.zscore(jobKeys.indexState('acme', 'DENIED'), a.id)).not.toBeNull();
    // the younger hold is untouched, also after further passes: scans come every 0.2 s and a pass
    // at most every TIMEOUT_MS / 4 (0.5 s), so 6 more scans include at least one more pass
    const scans = async () => (await rig.metrics.getSingleMetric('cordum_scheduler_reconcile_scans_total')?.get())?.values[0]?.value ?? 0;
    const seen = await scans();
    await waitFor(async () => (await scans()) >= seen + 6, 10_000, { message: 'six more reconciler scans' });
    expect(await stateOf(b.id)).toBe('APPROVAL_REQUIRED');
    const m = await rig.metrics.getSingleMetric('cordum_scheduler_reconciled_total')?.get();
    expect(m?.values.find((v) => v.labels['action'] === 'approval_expired')?.value).toBeGreaterThanOrEqual(1);
  });

  it('a due hold behind more than SCAN_LIMIT re-held jobs of its tenant still expires (P247)', async () => {
    // Created a minute ago and held again an hour from now (their clock): in the listing before the
    // due hold (listings are scored by creation) and never due while this test runs.
    const createdAt = Date.now() - 60_000;
    const old = createJobStore(rig.redis, { jobTtlMs: 3_600_000, now: () => createdAt });
    const crowd: string[] = [];
    for (let i = 0; i <= SCAN_LIMIT; i++) {
      const j = await old.createJob(held('crowded'));
      await rig.redis.hset(jobKeys.meta(j.id), 'updatedAt', JSON.stringify(Date.now() + 3_600_000));
      crowd.push(j.id);
    }
    const due = await createJobStore(rig.redis, { jobTtlMs: 3_600_000, now: () => createdAt + 1 }).createJob(held('crowded'));
    await waitFor(async () => (await stateOf(due.id)) === 'DENIED', 20_000, { message: 'the due hold behind the crowd expired' });
    expect((await store.getJob(due.id))?.error?.code).toBe('approval_expired');
    for (const id of crowd.slice(0, 5)) expect(await stateOf(id)).toBe('APPROVAL_REQUIRED');
    // Out of the listing, so the passes of later tests do not read them.
    await rig.redis.del(jobKeys.indexState('crowded', 'APPROVAL_REQUIRED'));
  }, 60_000);
});
