// D18 approval binding: the request hash (pure) and what the store keeps for it.
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedis, type TestServer } from '@cordum/testing';
import { approvalSuperseded, createJobStore, jobKeys, jobRequestHash, jobToApi, type ApprovalRecord, type JobStore } from '../src';
import { holdLock, newJob } from './helpers';

const base = {
  tenant: 'acme', topic: 'job.deploy', priority: 'interactive' as const, principalId: 'alice', labels: { env: 'prod', team: 'a' },
  riskTags: ['b', 'a'], requires: ['gpu'], capability: 'deploy',
};

describe('jobRequestHash', () => {
  const h = jobRequestHash(base, { prompt: 'ship it', context: { v: 1, w: [1, 2] } });

  it('is a SHA-256 hex, independent of key order and of the order of set-like lists', () => {
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(jobRequestHash({ ...base, labels: { team: 'a', env: 'prod' }, riskTags: ['a', 'b'] }, { context: { w: [1, 2], v: 1 }, prompt: 'ship it' })).toBe(h);
  });

  it.each([
    ['topic', { ...base, topic: 'job.other' }, { prompt: 'ship it', context: { v: 1, w: [1, 2] } }],
    ['label', { ...base, labels: { env: 'dev', team: 'a' } }, { prompt: 'ship it', context: { v: 1, w: [1, 2] } }],
    ['tenant', { ...base, tenant: 'globex' }, { prompt: 'ship it', context: { v: 1, w: [1, 2] } }],
    ['submitter', { ...base, principalId: 'mallory' }, { prompt: 'ship it', context: { v: 1, w: [1, 2] } }],
    ['risk tags', { ...base, riskTags: ['a'] }, { prompt: 'ship it', context: { v: 1, w: [1, 2] } }],
    ['prompt', base, { prompt: 'rm -rf /', context: { v: 1, w: [1, 2] } }],
    ['context', base, { prompt: 'ship it', context: { v: 2, w: [1, 2] } }],
    ['context array order', base, { prompt: 'ship it', context: { v: 1, w: [2, 1] } }],
  ])('changes with the %s', (_what, job, input) => {
    expect(jobRequestHash(job, input)).not.toBe(h);
  });
});

describe('store (real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  let store: JobStore;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    store = createJobStore(redis, { jobTtlMs: 60_000 });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('a job created held records holdHash = requestHash of its record and stored input; a PENDING one does not', async () => {
    const held = await store.createJob(newJob({ initialState: 'APPROVAL_REQUIRED' }));
    expect(held.holdHash).toBe(await store.requestHash(held));
    expect((await store.createJob(newJob())).holdHash).toBeUndefined();
    await redis.set(jobKeys.ctx(held.id), JSON.stringify({ prompt: 'changed', context: null }));
    expect(await store.requestHash(held)).not.toBe(held.holdHash);
  });

  it('keeps an approval on the record through a transition and shows it in the API shape', async () => {
    const held = await store.createJob(newJob({ idempotencyKey: 'approve-me', initialState: 'APPROVAL_REQUIRED', safety: { decision: 'require_human', reason: 'review', ruleId: 'r1', policySnapshot: 's1' } }));
    const token = await holdLock(redis, held.id);
    const approval = { status: 'approved' as const, by: 'bob', at: 1_700_000_000_000, jobHash: held.holdHash!, policySnapshot: 's1', ruleId: 'r1', revision: 1 };
    const r = await store.transition(held.id, 'PENDING', { token, from: ['APPROVAL_REQUIRED'], patch: { approval } });
    expect(r.ok && r.job.approval).toEqual(approval);
    expect(jobToApi((await store.getJob(held.id))!, null).approval).toEqual({ status: 'approved', by: 'bob', at: '2023-11-14T22:13:20.000Z', job_hash: held.holdHash, policy_snapshot: 's1', rule_id: 'r1', revision: 1 });
    // P75: a job approved near the end of its TTL gets a whole TTL again, record and all; P246: and its submit's idempotency claim.
    const claim = jobKeys.idempotency(held.tenant, 'approve-me');
    const keys = [jobKeys.ctx(held.id), jobKeys.meta(held.id), jobKeys.fence(held.id), jobKeys.decisions(held.id), claim];
    await redis.set(claim, held.id);
    await redis.incr(jobKeys.fence(held.id)); // as a lock acquire does
    for (const k of keys) await redis.pexpire(k, 1_000);
    await store.refreshLifetime(held);
    for (const k of keys) expect({ k, ttl: (await redis.pttl(k)) > 50_000 }).toEqual({ k, ttl: true });
  });
});

describe('approvalSuperseded (P258)', () => {
  const approval: ApprovalRecord = { status: 'approved', by: 'bob', at: 1, jobHash: 'h1', policySnapshot: 's1', ruleId: 'rule-a', revision: 1 };
  const hold = { decision: 'require_human', reason: 'needs a human', ruleId: 'rule-a', policySnapshot: 's1' };

  it('is false for a job whose approval covers its last decision (approved, or approved and gone)', () => {
    expect(approvalSuperseded({ approval, safety: hold, holdHash: 'h1' })).toBe(false);
    expect(approvalSuperseded({ approval, safety: { ...hold, reason: 'approved by bob: needs a human' }, holdHash: 'h1' })).toBe(false);
    // The policy allows it now: the approval was not needed, and not overtaken either.
    expect(approvalSuperseded({ approval, safety: { ...hold, decision: 'allow', ruleId: 'rule-b' }, holdHash: 'h1' })).toBe(false);
    expect(approvalSuperseded({ approval: { ...approval, status: 'rejected' }, safety: { ...hold, ruleId: 'rule-b' }, holdHash: 'h2' })).toBe(false);
    expect(approvalSuperseded({ safety: { ...hold, ruleId: 'rule-b' } })).toBe(false);
    // A retry stopped because another rule wants a human (P131): it ran under this approval.
    expect(approvalSuperseded({ approval, safety: { ...hold, ruleId: 'rule-b' }, holdHash: 'h1', error: { code: 'approval_required', message: 'retry of attempt 1 needs a human approval' } })).toBe(false);
  });

  it('is true when marked, and for a hold an earlier release wrote without the mark: another rule or another request hash', () => {
    expect(approvalSuperseded({ approval: { ...approval, superseded: true }, safety: hold, holdHash: 'h1' })).toBe(true);
    expect(approvalSuperseded({ approval, safety: { ...hold, ruleId: 'rule-b' }, holdHash: 'h1' })).toBe(true);
    expect(approvalSuperseded({ approval, safety: hold, holdHash: 'h2' })).toBe(true);
  });
});
