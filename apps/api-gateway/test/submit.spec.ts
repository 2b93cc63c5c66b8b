// Submit flow against real Redis, NATS and a topic-driven SafetyKernel:
// publish shape and msg id (D9), deny/hold/throttle/unavailable (D19),
// idempotency (D25), and the GET shape (CONTRACT §2).
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { ActorType, JobPriority, type Decision } from '@cordum/protocol';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { createJobStore, jobKeys } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { connect } from 'nats';
import { KEYS, call, expectEnvelope, metric, recordSubmits, startRig, type Rig, type SubmitRecorder } from './harness';

let rig: Rig;
let bus: Bus;
let submits: SubmitRecorder;
let redis: RedisClient;

beforeAll(async () => {
  rig = await startRig();
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'submit-spec' });
  const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
  bus = await connectBus({ servers: [rig.nats.url], name: 'submit-spec', logger: silent });
  submits = await recordSubmits(bus, 'submit-spec');
});

afterAll(async () => {
  await submits.stop();
  await bus.close();
  await closeRedis(redis);
  await rig.stop();
});

const submit = (body: Record<string, unknown>, opts: { key?: string; headers?: Record<string, string> } = {}) =>
  call(rig.url, 'POST', '/api/v1/jobs', { key: opts.key ?? KEYS.operator, body, headers: opts.headers });

describe('POST /api/v1/jobs', () => {
  it('accepts, writes ctx:<id> and the job, and publishes a decodable JobRequest on sys.job.submit', async () => {
    const r = await submit({
      prompt: 'hello world',
      topic: 'job.echo',
      context: { a: [1, 2] },
      priority: 'batch',
      labels: { env: 'dev' },
      capability: 'echo',
      risk_tags: ['low'],
      requires: ['gpu'],
      actor_id: 'u-1',
      actor_type: 'human',
      memory_id: 'mem-1',
      deadline_ms: 60_000,
      idempotency_key: 'publish-shape-1',
    });
    expect(r.status).toBe(200);
    const jobId = String(r.body['job_id']);
    const traceId = String(r.body['trace_id']);
    expect(jobId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(traceId).toMatch(/^[0-9a-f-]{36}$/);
    expect(Object.keys(r.body).sort()).toEqual(['job_id', 'trace_id']);
    expect(r.headers.get('etag')).toBeNull(); // no per-response body hash (app.ts)

    const ctx = JSON.parse((await redis.get(`ctx:${jobId}`)) ?? 'null') as Record<string, unknown>;
    expect(ctx).toMatchObject({ prompt: 'hello world', context: { a: [1, 2] }, topic: 'job.echo', tenant_id: 'acme', priority: 'batch' });
    // Indexed before the answer (the index writes go after the publish but are awaited): listed at once.
    expect(await redis.zscore(jobKeys.indexAll('acme'), jobId)).not.toBeNull();
    expect(await redis.zscore(jobKeys.indexState('acme', 'PENDING'), jobId)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), jobId)).not.toBeNull();

    const got = await submits.first(jobId);
    expect(got.packet.traceId).toBe(traceId);
    expect(got.packet.protocolVersion).toBe(1);
    const req = got.request;
    expect(req).toMatchObject({
      jobId,
      topic: 'job.echo',
      priority: JobPriority.BATCH,
      contextPtr: `redis://ctx:${jobId}`,
      tenantId: 'acme',
      principalId: 'alice',
      labels: { env: 'dev' },
      memoryId: 'mem-1',
    });
    expect(req.budget?.deadlineMs).toBe(60_000n);
    expect(req.meta).toMatchObject({
      tenantId: 'acme',
      actorId: 'u-1',
      actorType: ActorType.HUMAN,
      idempotencyKey: 'publish-shape-1',
      capability: 'echo',
      riskTags: ['low'],
      requires: ['gpu'],
    });
  });

  it('publishes with msg id jobreq:<job_id>:0:0 (JetStream reports a republish with that id as a duplicate)', async () => {
    const r = await submit({ prompt: 'dedup', topic: 'job.echo' });
    const jobId = String(r.body['job_id']);
    await submits.first(jobId);
    const nc = await connect({ servers: rig.nats.url });
    try {
      const js = nc.jetstream();
      const dup = await js.publish(subjects.submit, new Uint8Array(), { msgID: `jobreq:${jobId}:0:0` });
      expect(dup.duplicate).toBe(true);
    } finally {
      await nc.close();
    }
  });

  it('an index key Redis cannot add to fails the submit before the job exists (503, no record, nothing published); the key\'s retry then succeeds', async () => {
    const records = async (): Promise<Set<string>> => new Set(await redis.keys('job:meta:*'));
    const before = await records();
    const publishedBefore = submits.jobs;
    await redis.set(jobKeys.indexAll('globex'), 'not a zset');
    try {
      const r = await submit({ prompt: 'unindexable', topic: 'job.echo', idempotency_key: 'unindexable-1' }, { key: KEYS.globex });
      expectEnvelope(r, 503, 'redis_unavailable');
      // The index entries go in the record's own script, ahead of it (decisions.md P20).
      expect([...(await records())].filter((k) => !before.has(k))).toEqual([]);
    } finally {
      await redis.del(jobKeys.indexAll('globex'));
    }
    const retry = await submit({ prompt: 'unindexable', topic: 'job.echo', idempotency_key: 'unindexable-1' }, { key: KEYS.globex });
    expect(retry.status).toBe(200);
    const jobId = String(retry.body['job_id']);
    await submits.first(jobId);
    await submits.drained();
    expect(submits.jobs).toBe(publishedBefore + 1);
    expect(submits.packets(jobId)).toHaveLength(1);
    expect(await redis.zscore(jobKeys.indexAll('globex'), jobId)).not.toBeNull();
    expect(await redis.zscore(jobKeys.active('PENDING'), jobId)).not.toBeNull();
  });

  it('DENY → 403 policy_denied with job_id, job DENIED and a DLQ entry', async () => {
    const r = await submit({ prompt: 'rm -rf', topic: 'job.deny.delete-all' });
    expectEnvelope(r, 403, 'policy_denied');
    const jobId = String(r.body['job_id']);
    expect(r.body['trace_id']).toEqual(expect.any(String));
    expect(r.body['error']).toBe('destructive operations are not allowed');
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.viewer });
    expect(g.body['state']).toBe('DENIED');
    expect(g.body['safety']).toEqual({ decision: 'deny', reason: 'destructive operations are not allowed', rule_id: 'rule-deny', policy_snapshot: 'snap-test' });
    expect(await redis.exists(`dlq:entry:${jobId}`)).toBe(1);
    await submits.drained();
    expect(submits.packets(jobId)).toEqual([]);
  });

  it('a keyed DENY whose DLQ write fails still answers 403 with its job, and the key keeps it (P39)', async () => {
    // dlq:index of the wrong type: the DLQ entry's index write fails after the record exists.
    const saved = await redis.zrange(jobKeys.dlqIndex(), '0', '-1', 'WITHSCORES');
    await redis.del(jobKeys.dlqIndex());
    await redis.set(jobKeys.dlqIndex(), 'not a zset');
    let first: Awaited<ReturnType<typeof submit>>;
    try {
      first = await submit({ prompt: 'rm -rf', topic: 'job.deny.delete-all', idempotency_key: 'deny-unlisted-1' });
    } finally {
      await redis.del(jobKeys.dlqIndex());
      for (let i = 0; i + 1 < saved.length; i += 2) await redis.zadd(jobKeys.dlqIndex(), saved[i + 1] as string, saved[i] as string);
    }
    // Before P39: 503 redis_unavailable and the claim released, so the retry made a second job.
    expectEnvelope(first, 403, 'policy_denied');
    const jobId = String(first.body['job_id']);
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.viewer });
    expect(g.body['state']).toBe('DENIED');
    const again = await submit({ prompt: 'rm -rf', topic: 'job.deny.delete-all', idempotency_key: 'deny-unlisted-1' });
    expectEnvelope(again, 403, 'policy_denied');
    expect(again.body['job_id']).toBe(jobId);
  });

  it('REQUIRE_HUMAN → 200 approval_required, job APPROVAL_REQUIRED, nothing published', async () => {
    const r = await submit({ prompt: 'deploy', topic: 'job.hold.deploy' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ job_id: expect.any(String), trace_id: expect.any(String), status: 'approval_required', reason: 'production changes need a human' });
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${String(r.body['job_id'])}`, { key: KEYS.operator });
    expect(g.body['state']).toBe('APPROVAL_REQUIRED');
    await submits.drained();
    expect(submits.packets(String(r.body['job_id']))).toEqual([]);
  });

  it('THROTTLE → 429 policy_throttled with Retry-After, and no job or claim is left behind', async () => {
    const r = await submit({ prompt: 'x', topic: 'job.throttle.llm', idempotency_key: 'throttled-1' });
    expectEnvelope(r, 429, 'policy_throttled');
    expect(r.headers.get('retry-after')).toBe('3');
    expect(await redis.exists('job:idempotency:acme:throttled-1')).toBe(0);
  });

  /** D19: the submit to `topic` is accepted PENDING with safety decision "unavailable", and published. */
  async function acceptedUnavailable(topic: string): Promise<void> {
    const r = await submit({ prompt: 'x', topic });
    expect(r.status).toBe(200);
    const jobId = String(r.body['job_id']);
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.operator });
    expect(g.body['state']).toBe('PENDING');
    expect((g.body['safety'] as { decision: string }).decision).toBe('unavailable');
    await submits.first(jobId);
  }

  it('kernel unavailable → accepted PENDING with safety decision "unavailable" (D19) and published', async () => {
    await acceptedUnavailable('job.broken.thing');
  });

  it('a decision this gateway does not know (a newer kernel) → accepted PENDING with "unavailable" (D19), not 500', async () => {
    rig.kernel.override = (req, m) => (m === 'evaluate' && req.topic === 'job.echo.future' ? { decision: 99 as Decision, reason: 'a decision from the future', policySnapshot: 'snap-test', ruleId: 'r' } : undefined);
    try {
      await acceptedUnavailable('job.echo.future');
    } finally {
      rig.kernel.override = undefined;
    }
  });

  it('the kernel sees tenant, principal, labels and meta', async () => {
    const r = await submit({ prompt: 'x', topic: 'job.echo.meta', labels: { env: 'prod' }, risk_tags: ['destructive'] });
    const seen = rig.kernel.calls.find((c) => c.jobId === r.body['job_id']);
    expect(seen).toMatchObject({ topic: 'job.echo.meta', tenant: 'acme', principalId: 'alice', labels: { env: 'prod' } });
    expect(seen?.meta?.riskTags).toEqual(['destructive']);
  });
});

describe('cordum_jobs_total (CONTRACT §7)', () => {
  const jobsTotal = async (state: string): Promise<number> => (await metric(rig.url, 'cordum_jobs_total', `state="${state}"`)) ?? 0;

  it('counts the transitions this gateway commits: one PENDING per accepted job, one DENIED per denied one', async () => {
    const [pending, denied, held] = [await jobsTotal('PENDING'), await jobsTotal('DENIED'), await jobsTotal('APPROVAL_REQUIRED')];
    expect((await submit({ prompt: 'p', topic: 'job.echo' })).status).toBe(200);
    expect((await submit({ prompt: 'p', topic: 'job.echo' })).status).toBe(200);
    expect((await submit({ prompt: 'p', topic: 'job.deny.x' })).status).toBe(403);
    expect((await submit({ prompt: 'p', topic: 'job.hold.x' })).status).toBe(200);
    expect(await jobsTotal('PENDING')).toBe(pending + 2);
    expect(await jobsTotal('DENIED')).toBe(denied + 1);
    expect(await jobsTotal('APPROVAL_REQUIRED')).toBe(held + 1);
  });
});

describe('idempotency (D25)', () => {
  it('a replay returns the first job_id and trace_id (header or body key)', async () => {
    const first = await submit({ prompt: 'once', topic: 'job.echo' }, { headers: { 'Idempotency-Key': 'replay-1' } });
    expect(first.status).toBe(200);
    const again = await submit({ prompt: 'once', topic: 'job.echo', idempotency_key: 'replay-1' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(await redis.get('job:idempotency:acme:replay-1')).toBe(first.body['job_id']);
  });

  it('the same key in another tenant is a different job', async () => {
    const a = await submit({ prompt: 'x', topic: 'job.echo', idempotency_key: 'cross-tenant' });
    const b = await submit({ prompt: 'x', topic: 'job.echo', idempotency_key: 'cross-tenant' }, { key: KEYS.globex });
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.body['job_id']).not.toBe(b.body['job_id']);
  });

  it('20 concurrent submits with one key create exactly one job', async () => {
    const before = rig.kernel.calls.length;
    const results = await Promise.all(Array.from({ length: 20 }, () => submit({ prompt: 'race', topic: 'job.echo', idempotency_key: 'race-20' })));
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
    const ids = new Set(results.map((r) => r.body['job_id']));
    expect(ids.size).toBe(1);
    const jobId = String([...ids][0]);
    expect(rig.kernel.calls.length - before).toBe(1);
    expect(await redis.zcard('job:index:{acme}:all')).toBeGreaterThan(0);
    const members = await redis.zrange('job:index:{acme}:all', '0', '-1');
    const raceJobs = [];
    for (const id of members) {
      const ctx = JSON.parse((await redis.get(`ctx:${id}`)) ?? '{}') as { prompt?: string };
      if (ctx.prompt === 'race') raceJobs.push(id);
    }
    expect(raceJobs).toEqual([jobId]);
    await submits.drained();
    expect(submits.packets(jobId)).toHaveLength(1);
  });
});

describe('GET /api/v1/jobs/:id', () => {
  it('returns the CONTRACT shape (result null while there is none)', async () => {
    const r = await submit({ prompt: 'shape', topic: 'job.echo', labels: { a: 'b' } });
    const jobId = String(r.body['job_id']);
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.viewer });
    expect(g.status).toBe(200);
    expect(g.body).toMatchObject({
      id: jobId,
      state: 'PENDING',
      topic: 'job.echo',
      tenant: 'acme',
      trace_id: r.body['trace_id'],
      priority: 'interactive',
      labels: { a: 'b' },
      attempts: 0,
      context_ptr: `redis://ctx:${jobId}`,
      result_ptr: null,
      result: null,
      safety: { decision: 'allow', reason: 'allowed', rule_id: 'rule-echo', policy_snapshot: 'snap-test' },
    });
    expect(String(g.body['created_at'])).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(String(g.body['updated_at'])).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('includes the JSON stored at result_ptr once the job has one', async () => {
    const r = await submit({ prompt: 'with result', topic: 'job.echo' });
    const jobId = String(r.body['job_id']);
    // Play scheduler and worker through the job-store API: lock, walk the state machine, write res:<id>.
    const store = createJobStore(redis, { jobTtlMs: 60_000 });
    const lease = await createLocks(redis).tryAcquire({ key: jobKeys.lock(jobId), ttlMs: 10_000, owner: 'spec', fenceKey: jobKeys.fence(jobId) });
    expect(lease).not.toBeNull();
    const token = lease!.token;
    await redis.set(jobKeys.res(jobId), JSON.stringify({ echo: 'with result' }));
    expect((await store.transition(jobId, 'SCHEDULED', { token })).ok).toBe(true);
    expect((await store.transition(jobId, 'DISPATCHED', { token, patch: { attempts: 1 } })).ok).toBe(true);
    expect((await store.transition(jobId, 'SUCCEEDED', { token, patch: { resultPtr: jobKeys.resPtr(jobId), workerId: 'w-1' } })).ok).toBe(true);
    await lease!.release();
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.operator });
    expect(g.body).toMatchObject({ state: 'SUCCEEDED', result_ptr: `redis://res:${jobId}`, result: { echo: 'with result' }, worker_id: 'w-1', attempts: 1 });
    expect(String(g.body['finished_at'])).toMatch(/\.\d{3}Z$/);
  });

  it('a stored result nested deeper than JSON.stringify can write reads as null, not a 500 on every GET (P269)', async () => {
    const r = await submit({ prompt: 'deep result', topic: 'job.echo' });
    const jobId = String(r.body['job_id']);
    const store = createJobStore(redis, { jobTtlMs: 60_000 });
    const lease = await createLocks(redis).tryAcquire({ key: jobKeys.lock(jobId), ttlMs: 10_000, owner: 'spec', fenceKey: jobKeys.fence(jobId) });
    const token = lease!.token;
    // Valid JSON (V8 parses it without recursion) that JSON.stringify throws RangeError on.
    await redis.set(jobKeys.res(jobId), `${'['.repeat(6_000)}${']'.repeat(6_000)}`);
    expect((await store.transition(jobId, 'SCHEDULED', { token })).ok).toBe(true);
    expect((await store.transition(jobId, 'DISPATCHED', { token, patch: { attempts: 1 } })).ok).toBe(true);
    expect((await store.transition(jobId, 'SUCCEEDED', { token, patch: { resultPtr: jobKeys.resPtr(jobId), workerId: 'w-1' } })).ok).toBe(true);
    await lease!.release();
    const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.operator });
    expect(g.status).toBe(200);
    expect(g.body).toMatchObject({ state: 'SUCCEEDED', result_ptr: `redis://res:${jobId}`, result: null });
  });

  it('another tenant\'s job is 404 job_not_found, same as a missing one', async () => {
    const r = await submit({ prompt: 'secret', topic: 'job.echo' });
    const other = await call(rig.url, 'GET', `/api/v1/jobs/${String(r.body['job_id'])}`, { key: KEYS.globex });
    expectEnvelope(other, 404, 'job_not_found');
    const missing = await call(rig.url, 'GET', '/api/v1/jobs/00000000-0000-4000-8000-000000000000', { key: KEYS.globex });
    expect(missing.body).toEqual({ ...other.body });
  });
});
