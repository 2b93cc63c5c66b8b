// Approvals (BEHAVIOURS §6, CONTRACT §2, D5, D18) and the /policy passthrough,
// on two gateway replicas sharing one Redis + NATS and an in-test kernel.
// Exactly-one-dispatch is counted on the bus: the republished submits of a job.
import { connectBus, type Bus } from '@cordum/bus';
import { createJobStore, jobKeys, jobRequestHash, type JobStore, type StoredInput } from '@cordum/job-store';
import { Decision, GrpcStatus, grpcError } from '@cordum/protocol';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import * as S from '../src/http/api-schemas';
import { API_KEYS_JSON, KEYS, call, expectEnvelope, recordSubmits, type SubmitRecorder } from './harness';
import { startReplicas, type Replicas } from './replicas';

const BOB = 'operator-key-acme-bob';
const CAROL = 'operator-key-acme-carol';
const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

let r: Replicas;
let redis: RedisClient;
let store: JobStore;
let bus: Bus;
let submits: SubmitRecorder;

beforeAll(async () => {
  const keys = [...(JSON.parse(API_KEYS_JSON) as object[]), { key: BOB, tenant: 'acme', role: 'operator', principal_id: 'bob' }, { key: CAROL, tenant: 'acme', role: 'operator', principal_id: 'carol' }];
  r = await startReplicas(2, { CORDUM_API_KEYS: JSON.stringify(keys) });
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  store = createJobStore(redis, { jobTtlMs: 60_000 });
  bus = await connectBus({ servers: [r.nats.url], name: 'approvals-test', logger: quiet });
  submits = await recordSubmits(bus, 'approvals-test');
});
afterAll(async () => {
  await submits.stop();
  await bus.close();
  await closeRedis(redis);
  await r.stop();
});
afterEach(() => {
  r.kernel.override = undefined;
});

const [gw1, gw2] = [() => r.urls[0]!, () => r.urls[1]!];

async function hold(body: Record<string, unknown> = {}): Promise<string> {
  const res = await call(gw1(), 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'deploy prod', topic: 'job.hold.deploy', context: { v: 1 }, ...body } });
  expect(res.body['status']).toBe('approval_required');
  return String(res.body['job_id']);
}

describe('GET /api/v1/approvals', () => {
  it('lists the tenant\'s held jobs with the decision and the job_hash of the request, newest first', async () => {
    const a = await hold();
    const b = await hold({ labels: { env: 'prod' } });
    await call(gw1(), 'POST', '/api/v1/jobs', { key: KEYS.globex, body: { prompt: 'globex', topic: 'job.hold.x' } });
    const res = await call(gw2(), 'GET', '/api/v1/approvals?limit=50', { key: KEYS.viewer });
    expect(res.status).toBe(200);
    expect(S.approvalListSchema.safeParse(res.body).success).toBe(true);
    const items = res.body['items'] as { job: { id: string; tenant: string }; decision: string; rule_id: string; policy_snapshot: string; job_hash: string }[];
    expect(items.every((i) => i.job.tenant === 'acme')).toBe(true);
    expect(items.map((i) => i.job.id).slice(0, 2)).toEqual([b, a]);
    const job = (await store.getJob(a))!;
    const input = (await store.readContext(a)) as StoredInput;
    expect(items.find((i) => i.job.id === a)).toMatchObject({ decision: 'require_human', rule_id: 'rule-hold', policy_snapshot: 'snap-test', job_hash: jobRequestHash(job, input) });
    // paging by cursor, and a topic filter
    const p1 = await call(gw1(), 'GET', '/api/v1/approvals?limit=1', { key: KEYS.viewer });
    expect((p1.body['items'] as unknown[]).length).toBe(1);
    const p2 = await call(gw1(), 'GET', `/api/v1/approvals?limit=1&cursor=${String(p1.body['next_cursor'])}`, { key: KEYS.viewer });
    expect((p2.body['items'] as { job: { id: string } }[])[0]?.job.id).toBe(a);
    expect(((await call(gw1(), 'GET', '/api/v1/approvals?topic=job.other', { key: KEYS.viewer })).body['items'] as unknown[]).length).toBe(0);
    expectEnvelope(await call(gw1(), 'GET', '/api/v1/approvals?limit=0', { key: KEYS.viewer }), 400, 'validation_failed');
  });
});

/** The audit lines (local transport: logged at info) for `target`'s `action`. */
const auditLines = (action: string, target: string): Record<string, unknown>[] =>
  r.logs
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === 'audit' && l['action'] === action && l['target'] === target);

describe('POST /api/v1/approvals/{job_id}/approve', () => {
  it('refuses the submitter (403 self_approval_denied) and viewers (403 forbidden); the job stays held', async () => {
    const id = await hold();
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: KEYS.operator, body: {} }), 403, 'self_approval_denied');
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: KEYS.viewer }), 403, 'forbidden');
    // the actor the job was submitted for counts as the submitter too
    const forBob = await hold({ actor_id: 'bob', actor_type: 'human' });
    expectEnvelope(await call(gw2(), 'POST', `/api/v1/approvals/${forBob}/approve`, { key: BOB }), 403, 'self_approval_denied');
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
    await submits.drained();
    expect(submits.packets(id)).toEqual([]);
  });

  it('a second operator\'s approval moves the job to PENDING, records it and republishes the submit once', async () => {
    const id = await hold();
    // Held nearly to the end of its TTL: the approval gives the job, record and all, a whole TTL again (P75).
    const lifetime = [jobKeys.meta(id), jobKeys.ctx(id), jobKeys.fence(id), jobKeys.decisions(id)];
    await redis.incr(jobKeys.fence(id)); // as any lock acquire does, should none have yet
    for (const k of lifetime) await redis.pexpire(k, 5_000);
    const res = await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { reason: 'change ticket 42' } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ job_id: id, state: 'PENDING' });
    for (const k of lifetime) expect({ k, renewed: (await redis.pttl(k)) > 6 * 24 * 3600 * 1000 }).toEqual({ k, renewed: true });
    const job = (await store.getJob(id))!;
    expect(job.approval).toMatchObject({ status: 'approved', by: 'bob', jobHash: job.holdHash, policySnapshot: 'snap-test', ruleId: 'rule-hold', reason: 'change ticket 42', revision: 1 });
    await submits.first(id);
    const view = await call(gw1(), 'GET', `/api/v1/jobs/${id}`, { key: KEYS.viewer });
    expect(S.jobSchema.safeParse(view.body).success).toBe(true);
    expect(view.body['approval']).toMatchObject({ status: 'approved', by: 'bob', rule_id: 'rule-hold', revision: 1 });
    // P311: the audit event says what was approved, and why (it outlives the job's record)
    expect(auditLines('approval.approve', id).map((l) => l['details'])).toEqual([{ rule_id: 'rule-hold', job_hash: job.holdHash, policy_snapshot: 'snap-test', revision: '1', reason: 'change ticket 42' }]);
    // idempotent
    const again = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL });
    expect(again.body).toEqual({ job_id: id, state: 'PENDING', status: 'already_approved' });
    expect(S.approvalActionSchema.safeParse(again.body).success).toBe(true);
  });

  it('10 concurrent approvals split over two gateways: one approves, nine answer already_approved, one submit is published', async () => {
    const id = await hold();
    const keys = [BOB, CAROL, KEYS.admin];
    const res = await Promise.all(Array.from({ length: 10 }, (_, i) => call(i % 2 ? gw2() : gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: keys[i % 3]!, body: {} })));
    expect(res.map((x) => x.status)).toEqual(Array(10).fill(200));
    expect(res.filter((x) => x.body['status'] === undefined)).toHaveLength(1);
    expect(res.filter((x) => x.body['status'] === 'already_approved')).toHaveLength(9);
    // Every approval's publish finished before its answer.
    await submits.drained();
    expect(submits.packets(id)).toHaveLength(1);
    expect((await store.getJob(id))?.approval?.revision).toBe(1);
  });

  it('409 stale_request when the stored request changed since the hold, or differs from the job_hash the approver reviewed', async () => {
    const id = await hold();
    const job = (await store.getJob(id))!;
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: 'f'.repeat(64) } }), 409, 'stale_request');
    // A misspelt job_hash is refused, not dropped (dropped, it would approve whatever the job is now).
    const typo = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hsh: 'f'.repeat(64) } });
    expectEnvelope(typo, 400, 'validation_failed');
    expect(JSON.stringify(typo.body['details'])).toContain('job_hsh');
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
    await redis.set(jobKeys.ctx(id), JSON.stringify({ prompt: 'something else', context: null }));
    const stale = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: job.holdHash } });
    expectEnvelope(stale, 409, 'stale_request');
    expect(stale.body['job_hash']).not.toBe(job.holdHash);
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: 'not-hex' } }), 400, 'validation_failed');
  });

  it('a job held again after an approval is approved only by a call naming the new hold: a retried approve is 409 approval_reheld (P81)', async () => {
    const id = await hold();
    const first = (await store.getJob(id))!;
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { reason: 'ticket 1' } })).body).toEqual({ job_id: id, state: 'PENDING' });
    await submits.first(id);
    // The request changes and the scheduler's Check holds the job again, bound to the new request.
    await redis.set(jobKeys.ctx(id), JSON.stringify({ prompt: 'deploy prod --force', context: { v: 1 } }));
    const now = (await store.getJob(id))!;
    const newHash = await store.requestHash(now);
    const lease = await createLocks(redis).acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'scheduler-test', waitMs: 2_000 });
    expect((await store.transition(id, 'APPROVAL_REQUIRED', { token: lease!.token, from: ['PENDING'], patch: { holdHash: newHash, safety: now.safety! } })).ok).toBe(true);
    await lease!.release();
    // Bob's client retries its approve (the answer was lost): it names no hold, so it approves nothing.
    const retry = await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { reason: 'ticket 1' } });
    expectEnvelope(retry, 409, 'approval_reheld');
    expect(retry.body).toMatchObject({ job_hash: newHash, rule_id: 'rule-hold', approved_revision: 1 });
    // Naming the first hold's request, or another rule, is stale.
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: first.holdHash, rule_id: 'rule-hold' } }), 409, 'stale_request');
    // P258: naming another rule than the new hold's is a hold the caller did not see: re-held, not a policy change.
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: newHash, rule_id: 'rule-other' } }), 409, 'approval_reheld');
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
    // Carol reviewed the new hold: she names it, and it is approved as revision 2, republished once more.
    const ok = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL, body: { job_hash: newHash, rule_id: 'rule-hold' } });
    expect(ok.body).toEqual({ job_id: id, state: 'PENDING' });
    expect((await store.getJob(id))?.approval).toMatchObject({ by: 'carol', jobHash: newHash, revision: 2 });
    await waitFor(() => submits.packets(id).length === 2, 10_000, { message: 'second approval republished' });
  });

  /**
   * What the scheduler's Check writes when it holds an approved job again by `ruleId` (P81; P258
   * marks the approval, `marked` false: as a scheduler of an earlier release wrote it).
   */
  async function holdAgain(id: string, ruleId: string, marked = true): Promise<void> {
    const now = (await store.getJob(id))!;
    const lease = await createLocks(redis).acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'scheduler-test', waitMs: 2_000 });
    const patch = { holdHash: await store.requestHash(now), safety: { ...now.safety!, ruleId }, approval: marked ? { ...now.approval!, superseded: true } : now.approval! };
    expect((await store.transition(id, 'APPROVAL_REQUIRED', { token: lease!.token, from: ['PENDING'], patch })).ok).toBe(true);
    await lease!.release();
  }

  it('P258: a job held again after an approval and then ended answers job_terminal to an approve, not already_approved', async () => {
    const id = await hold();
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB })).status).toBe(200);
    await holdAgain(id, 'rule-hold-2');
    const view = await call(gw1(), 'GET', `/api/v1/jobs/${id}`, { key: KEYS.operator });
    expect(view.body['approval']).toMatchObject({ status: 'approved', by: 'bob', rule_id: 'rule-hold', superseded: true });
    expect(S.jobSchema.safeParse(view.body).success).toBe(true);
    expect((await call(gw1(), 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator })).status).toBe(200);
    // Carol never approved the second hold, nor did anyone: it was cancelled.
    const carol = await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL });
    expectEnvelope(carol, 409, 'job_terminal');
    expect(carol.body).toMatchObject({ state: 'CANCELLED' });
    // An approval that covers the job's last hold still answers already_approved once it ended.
    const other = await hold();
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${other}/approve`, { key: BOB })).status).toBe(200);
    expect((await call(gw1(), 'POST', `/api/v1/jobs/${other}/cancel`, { key: KEYS.operator })).status).toBe(200);
    expect((await call(gw2(), 'POST', `/api/v1/approvals/${other}/approve`, { key: CAROL })).body).toMatchObject({ status: 'already_approved', state: 'CANCELLED' });
  });

  it('P258: a job held again by a scheduler of an earlier release (its approval not marked) is known by its hold: job_terminal once ended, and shown superseded', async () => {
    const id = await hold();
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB })).status).toBe(200);
    await holdAgain(id, 'rule-hold-2', false);
    expect((await store.getJob(id))?.approval?.superseded).toBeUndefined();
    const view = await call(gw1(), 'GET', `/api/v1/jobs/${id}`, { key: KEYS.operator });
    expect(view.body['approval']).toMatchObject({ status: 'approved', rule_id: 'rule-hold', superseded: true });
    expect((await call(gw1(), 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator })).status).toBe(200);
    const carol = await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL });
    expectEnvelope(carol, 409, 'job_terminal');
    expect(carol.body).toMatchObject({ state: 'CANCELLED' });
  });

  it('P258: an approve that read the hold before another operator approved it and the job was held again answers approval_reheld, not stale_request', async () => {
    const id = await hold();
    const reviewed = (await store.getJob(id))!;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inEvaluate = new Promise<void>((r) => (entered = r));
    // Bob's approve waits in Evaluate while Carol's approval lands and the scheduler holds the job again.
    r.kernel.override = (req, m) => {
      if (m !== 'evaluate' || req.jobId !== id) return undefined;
      entered();
      return gate.then(() => ({ decision: Decision.REQUIRE_HUMAN, reason: 'hold', policySnapshot: 'snap-test', ruleId: 'rule-hold', approvalRequired: true }));
    };
    const bob = call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: { job_hash: reviewed.holdHash, rule_id: 'rule-hold' } });
    await inEvaluate;
    r.kernel.override = undefined;
    expect((await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL })).status).toBe(200);
    await holdAgain(id, 'rule-hold-2');
    release();
    const answer = await bob;
    expectEnvelope(answer, 409, 'approval_reheld');
    expect(answer.body).toMatchObject({ rule_id: 'rule-hold-2', approved_revision: 1 });
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
  });

  it('409 stale_snapshot only when the current policy no longer holds the job by the same rule (D18)', async () => {
    const id = await hold();
    // a new snapshot that still holds it by rule-hold: fine
    r.kernel.override = (req, m) => (m === 'evaluate' && req.jobId === id ? { decision: Decision.REQUIRE_HUMAN, reason: 'still', policySnapshot: 'snap-2', ruleId: 'rule-hold', approvalRequired: true } : undefined);
    const second = await hold();
    r.kernel.override = (req, m) => (m === 'evaluate' && req.jobId === second ? { decision: Decision.REQUIRE_HUMAN, reason: 'other', policySnapshot: 'snap-2', ruleId: 'rule-other', approvalRequired: true } : undefined);
    const otherRule = await call(gw1(), 'POST', `/api/v1/approvals/${second}/approve`, { key: BOB });
    expectEnvelope(otherRule, 409, 'stale_snapshot');
    expect(otherRule.body).toMatchObject({ decision: 'require_human', rule_id: 'rule-other', held_by_rule: 'rule-hold' });
    r.kernel.override = (req, m) => (m === 'evaluate' && req.jobId === second ? { decision: Decision.DENY, reason: 'now denied', policySnapshot: 'snap-3', ruleId: 'rule-deny' } : undefined);
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${second}/approve`, { key: BOB }), 409, 'stale_snapshot');
    expect((await store.getJob(second))?.state).toBe('APPROVAL_REQUIRED');
    r.kernel.override = (req, m) => (m === 'evaluate' && req.jobId === id ? { decision: Decision.REQUIRE_HUMAN, reason: 'still', policySnapshot: 'snap-2', ruleId: 'rule-hold', approvalRequired: true } : undefined);
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB })).status).toBe(200);
    expect((await store.getJob(id))?.approval?.policySnapshot).toBe('snap-2');
  });

  it('a kernel that cannot answer, or a transient throttle, does not block an approval (the scheduler re-checks, D18/D19)', async () => {
    const id = await hold();
    r.kernel.override = (_req, m) => {
      if (m === 'evaluate') throw grpcError(GrpcStatus.UNAVAILABLE, 'down');
      return undefined;
    };
    const res = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB });
    expect(res.body).toEqual({ job_id: id, state: 'PENDING' });
    expect((await store.getJob(id))?.approval?.policySnapshot).toBe('snap-test');
    // nor does a transient THROTTLE from a velocity rule above the holding one
    r.kernel.override = undefined;
    const throttled = await hold();
    r.kernel.override = (req, m) => (m === 'evaluate' && req.jobId === throttled ? { decision: Decision.THROTTLE, reason: 'busy', policySnapshot: 'snap-test', ruleId: 'rule-throttle', retryAfterMs: 500n } : undefined);
    expect((await call(gw2(), 'POST', `/api/v1/approvals/${throttled}/approve`, { key: BOB })).body).toEqual({ job_id: throttled, state: 'PENDING' });
  });

  it('409 approval_not_pending for a job that is not held; 404 for unknown, malformed or foreign ids', async () => {
    const pending = String((await call(gw1(), 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.echo' } })).body['job_id']);
    const res = await call(gw1(), 'POST', `/api/v1/approvals/${pending}/approve`, { key: BOB });
    expectEnvelope(res, 409, 'approval_not_pending');
    expect(res.body['state']).toBe('PENDING');
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/approvals/nope/approve', { key: BOB }), 404, 'job_not_found');
    // P314: an error answer's request line carries its code (the runbooks read 503 causes from it)
    const line = r.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'http request' && l['route'] === '/api/v1/approvals/:job_id/approve' && l['status'] === 404);
    expect(line).toMatchObject({ code: 'job_not_found' });
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/approvals/%E2%9C%93/reject', { key: BOB }), 404, 'job_not_found');
    const held = await hold();
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${held}/approve`, { key: KEYS.globex }), 404, 'job_not_found');
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${held}/approve`, { key: BOB, body: { tenant_id: 'globex' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${held}/approve`, { key: BOB, body: '[1' }), 400, 'invalid_json');
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${held}/approve`, { key: BOB, body: { reason: 5 } }), 400, 'validation_failed');
  });
});

describe('POST /api/v1/approvals/{job_id}/reject', () => {
  it('ends the job DENIED with a DLQ entry; repeats are idempotent; approving it afterwards is 409 job_terminal', async () => {
    const id = await hold();
    const res = await call(gw2(), 'POST', `/api/v1/approvals/${id}/reject`, { key: BOB, body: { reason: 'not in the change window' } });
    expect(res.body).toEqual({ job_id: id, state: 'DENIED' });
    const job = (await store.getJob(id))!;
    expect(job).toMatchObject({ state: 'DENIED', error: { code: 'approval_rejected', message: 'not in the change window' }, approval: { status: 'rejected', by: 'bob', ruleId: 'rule-hold' } });
    expect(await store.getDlq(id)).toMatchObject({ reason_code: 'approval_rejected', reason: 'not in the change window', last_state: 'DENIED' });
    expect(auditLines('approval.reject', id).map((l) => l['details'])).toEqual([{ rule_id: 'rule-hold', job_hash: job.holdHash, policy_snapshot: 'snap-test', reason: 'not in the change window' }]);
    const dlq = await call(gw1(), 'GET', '/api/v1/dlq', { key: KEYS.viewer });
    expect(JSON.stringify(dlq.body)).toContain(id);
    expect((await call(gw1(), 'POST', `/api/v1/approvals/${id}/reject`, { key: CAROL })).body).toEqual({ job_id: id, state: 'DENIED', status: 'already_rejected' });
    const late = await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL });
    expectEnvelope(late, 409, 'job_terminal');
    expect(late.body['state']).toBe('DENIED');
    await submits.drained();
    expect(submits.packets(id)).toEqual([]);
  });
});

describe('a job retried from the DLQ (P106)', () => {
  it('may not be approved by the submitter of the job it retries, nor by whoever retried it; it names that job in retried_from', async () => {
    const original = await hold(); // submitted by alice
    await call(gw2(), 'POST', `/api/v1/approvals/${original}/reject`, { key: BOB, body: { reason: 'not now' } });
    const retried = await call(gw1(), 'POST', `/api/v1/dlq/${original}/retry`, { key: CAROL });
    expect(retried.status).toBe(200);
    expect(retried.body['status']).toBe('approval_required');
    const id = String(retried.body['job_id']);
    expect((await call(gw1(), 'GET', `/api/v1/jobs/${id}`, { key: KEYS.viewer })).body['retried_from']).toBe(original);
    // alice submitted the request; carol is the new job's submitter
    expectEnvelope(await call(gw1(), 'POST', `/api/v1/approvals/${id}/approve`, { key: KEYS.operator, body: {} }), 403, 'self_approval_denied');
    expectEnvelope(await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: CAROL, body: {} }), 403, 'self_approval_denied');
    expect((await store.getJob(id))?.state).toBe('APPROVAL_REQUIRED');
    const ok = await call(gw2(), 'POST', `/api/v1/approvals/${id}/approve`, { key: BOB, body: {} });
    expect(ok.status).toBe(200);
    expect((await store.getJob(id))?.state).toBe('PENDING');
  });
});

describe('a reject whose side writes failed (P53)', () => {
  it('is completed by the repeated reject: the DLQ entry is indexed and listed', async () => {
    const id = await hold();
    // dlq:index of the wrong type: the DLQ write fails at its ZADD, after DENIED committed
    const parked = `dlq:index:parked-${process.pid}`;
    const hadIndex = (await redis.exists(jobKeys.dlqIndex())) === 1;
    if (hadIndex) await redis.rename(jobKeys.dlqIndex(), parked);
    await redis.set(jobKeys.dlqIndex(), 'not-a-zset');
    let first;
    try {
      first = await call(gw2(), 'POST', `/api/v1/approvals/${id}/reject`, { key: BOB, body: { reason: 'no' } });
    } finally {
      await redis.del(jobKeys.dlqIndex());
      if (hadIndex) await redis.rename(parked, jobKeys.dlqIndex());
    }
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect((await store.getJob(id))?.state).toBe('DENIED');
    expect(await redis.zscore(jobKeys.dlqIndex(), id)).toBeNull();

    const again = await call(gw1(), 'POST', `/api/v1/approvals/${id}/reject`, { key: BOB });
    expect(again.body).toEqual({ job_id: id, state: 'DENIED', status: 'already_rejected' });
    expect(await redis.zscore(jobKeys.dlqIndex(), id)).not.toBeNull();
    const dlq = await call(gw1(), 'GET', '/api/v1/dlq', { key: KEYS.viewer });
    expect((dlq.body['items'] as { job_id: string; reason: string }[]).find((e) => e.job_id === id)).toMatchObject({ reason: 'no' });
  });
});

describe('a cancel of a held job whose listing move failed (P147)', () => {
  it('is completed by the repeated cancel: listed CANCELLED, out of the approvals list', async () => {
    const id = await hold();
    // The tenant's CANCELLED listing of the wrong type: the index move fails after CANCELLED committed.
    const key = jobKeys.indexState('acme', 'CANCELLED');
    const parked = `${key}:parked-${process.pid}`;
    const hadIndex = (await redis.exists(key)) === 1;
    if (hadIndex) await redis.rename(key, parked);
    await redis.set(key, 'not-a-zset');
    let first;
    try {
      first = await call(gw2(), 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator });
    } finally {
      await redis.del(key);
      if (hadIndex) await redis.rename(parked, key);
    }
    expect(first.status).toBeGreaterThanOrEqual(500);
    expect((await store.getJob(id))?.state).toBe('CANCELLED');
    expect(await redis.zscore(key, id)).toBeNull();
    expect(await redis.zscore(jobKeys.indexState('acme', 'APPROVAL_REQUIRED'), id)).not.toBeNull();

    expectEnvelope(await call(gw1(), 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator }), 409, 'job_terminal');
    const listed = await call(gw1(), 'GET', '/api/v1/jobs?state=CANCELLED&limit=200', { key: KEYS.viewer });
    expect((listed.body['items'] as { id: string }[]).map((j) => j.id)).toContain(id);
    const approvals = await call(gw1(), 'GET', '/api/v1/approvals?limit=200', { key: KEYS.viewer });
    expect((approvals.body['items'] as { job: { id: string } }[]).map((i) => i.job.id)).not.toContain(id);
  });
});

describe('/api/v1/policy passthrough', () => {
  it('evaluate, explain and simulate answer the kernel\'s decision in the acting tenant', async () => {
    const ev = await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.operator, body: { topic: 'job.deny.x', labels: { a: 'b' } } });
    expect(ev.status).toBe(200);
    expect(S.policyDecisionSchema.safeParse(ev.body).success).toBe(true);
    expect(ev.body).toMatchObject({ decision: 'deny', rule_id: 'rule-deny', policy_snapshot: 'snap-test' });
    const last = r.kernel.calls[r.kernel.calls.length - 1]!;
    expect({ tenant: last.tenant, principal: last.principalId, labels: last.labels }).toEqual({ tenant: 'acme', principal: 'alice', labels: { a: 'b' } });
    r.kernel.override = (_req, m) => (m === 'explain' ? { decision: Decision.ALLOW, reason: 'ok', policySnapshot: 's', ruleId: 'r2', trace: [{ ruleId: 'r1', matched: false, why: 'no' }, { ruleId: 'r2', matched: true, why: 'yes' }] } : undefined) as never;
    const ex = await call(gw2(), 'POST', '/api/v1/policy/explain', { key: KEYS.operator, body: { topic: 'job.echo' } });
    expect(S.policyDecisionSchema.safeParse(ex.body).success).toBe(true);
    expect(ex.body['trace']).toEqual([{ rule_id: 'r1', matched: false, why: 'no' }, { rule_id: 'r2', matched: true, why: 'yes' }]);
    r.kernel.override = (req, m) => (m === 'simulate' ? { decision: Decision.THROTTLE, reason: req.candidatePolicyYaml, policySnapshot: 'cand', ruleId: 't', retryAfterMs: 1500n } : undefined);
    const sim = await call(gw1(), 'POST', '/api/v1/policy/simulate', { key: KEYS.operator, body: { topic: 'job.echo', policy_yaml: 'version: 1\ndefault_decision: deny\n' } });
    expect(sim.body).toMatchObject({ decision: 'throttle', reason: 'version: 1\ndefault_decision: deny\n', retry_after_ms: 1500, trace: [] });
  });

  it('maps an invalid candidate to 400 invalid_policy and a dead kernel to 503 safety_unavailable', async () => {
    r.kernel.override = (_req, m) => {
      if (m === 'simulate') throw grpcError(GrpcStatus.INVALID_ARGUMENT, "rule 'x' (rules[0]): match.tenant: unknown key");
      if (m === 'evaluate') throw grpcError(GrpcStatus.UNAVAILABLE, 'down');
      return undefined;
    };
    const proto = await call(gw1(), 'POST', '/api/v1/policy/simulate', { key: KEYS.operator, body: '{"topic":"job.echo","labels":{"__proto__":{}},"policy_yaml":"version: 1\\ndefault_decision: deny\\n"}' });
    expectEnvelope(proto, 400, 'validation_failed');
    expect(proto.body['details']).toEqual([{ path: 'labels.__proto__', message: 'key __proto__ is not allowed' }]);
    const bad = await call(gw1(), 'POST', '/api/v1/policy/simulate', { key: KEYS.operator, body: { topic: 'job.echo', policy_yaml: 'x' } });
    expectEnvelope(bad, 400, 'invalid_policy');
    expect(bad.body['error']).toContain('match.tenant: unknown key');
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.operator, body: { topic: 'job.echo' } }), 503, 'safety_unavailable');
    // P146: a kernel busy with other simulations refuses RESOURCE_EXHAUSTED: 429 with a wait.
    r.kernel.override = (_req, m) => {
      if (m === 'simulate') throw grpcError(GrpcStatus.RESOURCE_EXHAUSTED, 'the kernel is running other policy simulations (2 waiting); retry shortly');
      return undefined;
    };
    const busy = await call(gw1(), 'POST', '/api/v1/policy/simulate', { key: KEYS.operator, body: { topic: 'job.echo', policy_yaml: 'version: 1\ndefault_decision: deny\n' } });
    expectEnvelope(busy, 429, 'simulation_busy');
    expect({ retryAfter: busy.headers.get('retry-after'), ms: busy.body['retry_after_ms'] }).toEqual({ retryAfter: '1', ms: 1000 });
  });

  it('validates input, tenancy and roles', async () => {
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.operator, body: { topic: 'nope' } }), 400, 'validation_failed');
    // P329: a job id as every other entry point holds it (it was any 1–128 characters here).
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.operator, body: { topic: 'job.x', job_id: 'a{b}\n' } }), 400, 'validation_failed');
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/simulate', { key: KEYS.operator, body: { topic: 'job.x' } }), 400, 'validation_failed');
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.globex, body: { topic: 'job.x', tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(gw1(), 'POST', '/api/v1/policy/evaluate', { key: KEYS.viewer, body: { topic: 'job.x' } }), 403, 'forbidden');
    expectEnvelope(await call(gw1(), 'GET', '/api/v1/policy/rules'), 401, 'unauthenticated');
  });

  it('snapshots and rules come from the kernel', async () => {
    const snaps = await call(gw1(), 'GET', '/api/v1/policy/snapshots', { key: KEYS.viewer });
    expect(S.policySnapshotsSchema.safeParse(snaps.body).success).toBe(true);
    expect(snaps.body).toEqual({ current: 'snap-test', items: [{ id: 'snap-test', loaded_at: '2023-11-14T22:13:20.000Z', rule_count: 4 }] });
    const rules = await call(gw2(), 'GET', '/api/v1/policy/rules', { key: KEYS.viewer });
    expect(S.policyRulesSchema.safeParse(rules.body).success).toBe(true);
    expect(rules.body['default_decision']).toBe('allow');
    expect((rules.body['items'] as unknown[])[1]).toEqual({ id: 'rule-hold', decision: 'require_approval', reason: 'hold', source: 'file', spec: { match: { topics: ['job.hold.>'] } } });
  });
});

