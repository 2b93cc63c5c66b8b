// Job list/cancel/decisions, DLQ, workers/pools/topics, config and status
// routes against real Redis and NATS; every 2xx body is validated against the
// zod schema the OpenAPI document is generated from.
import { get as httpGet } from 'node:http';
import { subjects, type Bus } from '@cordum/bus';
import { CANCEL_OWED_AFTER_MS, DLQ_TTL_MS, encodeWorkerSnapshot, jobKeys, type JobStore } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';
import { decodePacket } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import type { z } from 'zod';
import * as S from '../src/http/api-schemas';
import { buildOpenApi } from '../src/http/openapi';
import { KEYS, call, cancelsDrained, expectEnvelope, rigClients, runJobAsScheduler, startRig, type CallResult, type Rig, type RigClients } from './harness';

let rig: Rig;
let clients: RigClients;
let redis: RedisClient;
let store: JobStore;
let locks: Locks;
let bus: Bus;
const cancels: { jobId: string; reason: string; requestedBy: string }[] = [];

beforeAll(async () => {
  rig = await startRig();
  clients = await rigClients(rig, 'ops-test');
  ({ redis, store, locks, bus } = clients);
  bus.subscribe(subjects.cancel, (data) => {
    const p = decodePacket(data);
    if (p.payload.case === 'jobCancel') cancels.push({ jobId: p.payload.value.jobId, reason: p.payload.value.reason, requestedBy: p.payload.value.requestedBy });
  });
  await bus.flush();
});
afterAll(async () => {
  await clients?.close();
  await rig.stop();
});

function valid<T extends z.ZodType>(schema: T, r: CallResult, status = 200): z.output<T> {
  expect(r.status).toBe(status);
  const p = schema.safeParse(r.body);
  if (!p.success) throw new Error(`response does not match schema: ${JSON.stringify(p.error.issues)} body=${JSON.stringify(r.body)}`);
  return p.data;
}

async function submit(topic: string, key: string = KEYS.operator, tenant?: string): Promise<string> {
  const r = await call(rig.url, 'POST', '/api/v1/jobs', { key, tenant, body: { prompt: 'p', topic } });
  expect([200, 403]).toContain(r.status);
  return String(r.body['job_id']);
}

const failJob = (id: string): Promise<void> => clients.failJob(id);

describe('GET /api/v1/jobs', () => {
  it('pages through every job of the tenant exactly once, newest first, with an opaque cursor', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await submit(i % 2 === 0 ? 'job.list.a' : 'job.list.b', KEYS.star, 'listco'));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = cursor ? `&cursor=${cursor}` : '';
      const page = valid(S.jobListSchema, await call(rig.url, 'GET', `/api/v1/jobs?limit=3${q}`, { key: KEYS.star, tenant: 'listco' }));
      expect(page.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.items.map((j) => j.id));
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < 10);
    expect(seen).toEqual([...ids].reverse());
    expect(pages).toBe(3);
  });

  it('filters by topic while paging and by state via the state index', async () => {
    const all: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${cursor}` : '';
      const page = valid(S.jobListSchema, await call(rig.url, 'GET', `/api/v1/jobs?topic=job.list.a&limit=2${q}`, { key: KEYS.star, tenant: 'listco' }));
      for (const j of page.items) expect(j.topic).toBe('job.list.a');
      all.push(...page.items.map((j) => j.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(all).toHaveLength(4);
    const pending = valid(S.jobListSchema, await call(rig.url, 'GET', '/api/v1/jobs?state=pending&limit=500', { key: KEYS.star, tenant: 'listco' }));
    expect(pending.items).toHaveLength(7);
    const none = valid(S.jobListSchema, await call(rig.url, 'GET', '/api/v1/jobs?state=SUCCEEDED', { key: KEYS.star, tenant: 'listco' }));
    expect(none).toEqual({ items: [], next_cursor: null });
  });

  it('a listing of a live state drops members whose record has ended, left there by an index write that landed late; a member in another live state stays (P239)', async () => {
    const ended = await submit('job.stale.a', KEYS.star, 'staleco');
    const moving = await submit('job.stale.b', KEYS.star, 'staleco');
    expect((await call(rig.url, 'POST', `/api/v1/jobs/${ended}/cancel`, { key: KEYS.star, tenant: 'staleco' })).status).toBe(200);
    const created = async (id: string): Promise<number> => (await store.getJob(id))!.createdAt;
    // a scheduler's DISPATCHED → RUNNING index write landing after the cancel's, and a job whose
    // move to RUNNING has its index write ahead of its record's (a live state: may be in flight)
    await redis.zadd(jobKeys.indexState('staleco', 'RUNNING'), await created(ended), ended);
    await redis.zadd(jobKeys.indexState('staleco', 'RUNNING'), await created(moving), moving);
    const running = valid(S.jobListSchema, await call(rig.url, 'GET', '/api/v1/jobs?state=RUNNING', { key: KEYS.star, tenant: 'staleco' }));
    expect(running).toEqual({ items: [], next_cursor: null });
    await waitFor(async () => (await redis.zscore(jobKeys.indexState('staleco', 'RUNNING'), ended)) === null, 5_000, { message: 'the ended job left the RUNNING index' });
    expect(await redis.zscore(jobKeys.indexState('staleco', 'RUNNING'), moving)).not.toBeNull();
    // an ended state's own listing keeps its members
    const cancelled = valid(S.jobListSchema, await call(rig.url, 'GET', '/api/v1/jobs?state=CANCELLED', { key: KEYS.star, tenant: 'staleco' }));
    expect(cancelled.items.map((j) => j.id)).toEqual([ended]);
  });

  it('rejects bad query params with 400 validation_failed', async () => {
    for (const q of ['limit=0', 'limit=501', 'limit=abc', 'state=NOPE', 'topic=echo', 'cursor=!!', 'cursor=eyJ4IjoxfQ', 'limit=1&limit=2']) {
      expectEnvelope(await call(rig.url, 'GET', `/api/v1/jobs?${q}`, { key: KEYS.viewer }), 400, 'validation_failed');
    }
  });
});

describe('POST /api/v1/jobs/:id/cancel', () => {
  it('cancels, publishes one JobCancel on sys.job.cancel, and a second cancel is 409 job_terminal', async () => {
    const id = await submit('job.echo');
    // a result a worker wrote before it heard the cancel gets the job TTL with the CANCELLED write (D45)
    await redis.set(jobKeys.res(id), '{"partial":true}');
    const r = valid(S.cancelResponseSchema, await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator, body: { reason: 'not needed' } }));
    expect(r).toEqual({ id, state: 'CANCELLED' });
    expect((await store.getJob(id))?.state).toBe('CANCELLED');
    expect(await redis.pttl(jobKeys.res(id))).toBeGreaterThan(0);
    await cancelsDrained(bus, cancels);
    expect(cancels.filter((c) => c.jobId === id)).toEqual([{ jobId: id, reason: 'not needed', requestedBy: 'alice' }]);
    // Sent, and no attempt was out (the job was PENDING), so no longer owed (P134/P135).
    expect(await redis.zscore(jobKeys.cancelOutbox(), id)).toBeNull();
    const again = await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator });
    expectEnvelope(again, 409, 'job_terminal');
    expect(again.body['state']).toBe('CANCELLED');
  });

  it('a cancel of a RUNNING job stays owed after its publish, due 10 s on, so the schedulers send it again unless the attempt answers (P135)', async () => {
    const id = await submit('job.echo');
    await runJobAsScheduler(store, locks, id);
    const before = Date.now();
    expect(await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator })).toMatchObject({ status: 200, body: { id, state: 'CANCELLED' } });
    await cancelsDrained(bus, cancels);
    expect(cancels.filter((c) => c.jobId === id)).toHaveLength(1);
    const due = Number(await redis.zscore(jobKeys.cancelOutbox(), id));
    expect(due).toBeGreaterThanOrEqual(before + CANCEL_OWED_AFTER_MS);
    expect(due).toBeLessThanOrEqual(Date.now() + CANCEL_OWED_AFTER_MS);
    await redis.zrem(jobKeys.cancelOutbox(), id);
  });

  it('a held job lock makes cancel wait ≤ 2 s and answer 409 job_busy; the job is untouched', async () => {
    const id = await submit('job.echo');
    const lease = await locks.tryAcquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'other' });
    const r = await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator });
    await lease?.release();
    expectEnvelope(r, 409, 'job_busy');
    expect(r.ms).toBeGreaterThanOrEqual(1_900);
    expect((await store.getJob(id))?.state).toBe('PENDING');
  });

  it('viewer cannot cancel; unknown id is 404', async () => {
    const id = await submit('job.echo');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.viewer }), 403, 'forbidden');
    expectEnvelope(await call(rig.url, 'POST', '/api/v1/jobs/nope/cancel', { key: KEYS.operator }), 404, 'job_not_found');
  });
});

describe('GET /api/v1/jobs/:id/decisions', () => {
  it('returns the submit-time decision, then the scheduler\'s re-check', async () => {
    const id = await submit('job.hold.deploy');
    const d1 = valid(S.decisionsSchema, await call(rig.url, 'GET', `/api/v1/jobs/${id}/decisions`, { key: KEYS.viewer }));
    expect(d1.items.map((d) => [d.decision, d.rule_id, d.state])).toEqual([['require_human', 'rule-hold', 'APPROVAL_REQUIRED']]);
    const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
    await store.transition(id, 'DENIED', { token: lease!.token, patch: { safety: { decision: 'deny', reason: 'rejected', ruleId: 'r2', policySnapshot: 's2' } } });
    await lease!.release();
    const d2 = valid(S.decisionsSchema, await call(rig.url, 'GET', `/api/v1/jobs/${id}/decisions`, { key: KEYS.viewer }));
    expect(d2.items.map((d) => d.decision)).toEqual(['require_human', 'deny']);
  });
});

describe('DLQ', () => {
  it('lists the tenant\'s dead letters with the contract fields', async () => {
    const denied = await submit('job.deny.drop', KEYS.star, 'dlqco');
    const failed = await submit('job.echo', KEYS.star, 'dlqco');
    await failJob(failed);
    const page = valid(S.dlqListSchema, await call(rig.url, 'GET', '/api/v1/dlq', { key: KEYS.star, tenant: 'dlqco' }));
    expect(page.items.map((e) => e.job_id)).toEqual([failed, denied]);
    expect(page.items[0]).toMatchObject({ topic: 'job.echo', reason: 'boom', reason_code: 'worker_error', last_state: 'FAILED', attempts: 0 });
    expect(page.items[1]).toMatchObject({ reason_code: 'policy_denied', last_state: 'DENIED' });
    expect(page.next_cursor).toBeNull();
  });

  it('20 concurrent retries of one entry create exactly one new job; later retries say already_retried', async () => {
    const failed = await submit('job.echo');
    await failJob(failed);
    const before = await redis.zcard(jobKeys.indexAll('acme'));
    const rs = await Promise.all(Array.from({ length: 20 }, () => call(rig.url, 'POST', `/api/v1/dlq/${failed}/retry`, { key: KEYS.operator })));
    const bodies = rs.map((r) => valid(S.dlqRetrySchema, r));
    const ids = new Set(bodies.map((b) => b.job_id));
    expect(ids.size).toBe(1);
    const newId = [...ids][0]!;
    expect(newId).not.toBe(failed);
    expect(bodies.filter((b) => b.status === undefined)).toHaveLength(1);
    expect(bodies.every((b) => b.retried_from === failed)).toBe(true);
    expect(await redis.zcard(jobKeys.indexAll('acme'))).toBe(before + 1);
    const newJob = await store.getJob(newId);
    expect(newJob).toMatchObject({ tenant: 'acme', topic: 'job.echo', state: 'PENDING' });
    const later = valid(S.dlqRetrySchema, await call(rig.url, 'POST', `/api/v1/dlq/${failed}/retry`, { key: KEYS.operator }));
    expect(later).toMatchObject({ job_id: newId, retried_from: failed, status: 'already_retried' });
  });

  it('a retry the kernel denies again is 403 policy_denied with the new job id', async () => {
    const denied = await submit('job.deny.x');
    const r = await call(rig.url, 'POST', `/api/v1/dlq/${denied}/retry`, { key: KEYS.operator });
    expectEnvelope(r, 403, 'policy_denied');
    expect(r.body['retried_from']).toBe(denied);
    expect(r.body['job_id']).not.toBe(denied);
  });

  it('DELETE is admin-only and removes the entry', async () => {
    const denied = await submit('job.deny.y');
    expectEnvelope(await call(rig.url, 'DELETE', `/api/v1/dlq/${denied}`, { key: KEYS.operator }), 403, 'forbidden');
    const del = await call(rig.url, 'DELETE', `/api/v1/dlq/${denied}`, { key: KEYS.admin });
    expect(del.status).toBe(204);
    expect(await store.getDlq(denied)).toBeNull();
    expectEnvelope(await call(rig.url, 'DELETE', `/api/v1/dlq/${denied}`, { key: KEYS.admin }), 404, 'dlq_not_found');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/dlq/${denied}/retry`, { key: KEYS.operator }), 404, 'dlq_not_found');
  });

  it('the retention leader trims DLQ index entries past 30 days and job index entries past the job TTL', async () => {
    const now = Date.now();
    await redis.zadd(jobKeys.dlqIndex(), 1, 'ancient');
    await redis.zadd(jobKeys.dlqIndexTenant('oldco'), 1, 'ancient');
    await redis.zadd(jobKeys.indexAll('oldco'), String(now - 8 * 24 * 3600 * 1000), 'expired-job', String(now - 60_000), 'live-job');
    // written directly here, so registered as the index writer and writeDlq register theirs (P89)
    await redis.zadd(jobKeys.indexRegistry(), now, jobKeys.dlqIndexTenant('oldco'), now, jobKeys.indexAll('oldco'));
    // The gateway campaigns for the cleanup lease at start (D7), so one replica trims.
    await waitFor(async () => (await redis.get('cordum:dlq:cleanup'))?.startsWith('gw-test:') ?? false, 5_000);
    const { createRetentionCleanup } = await import('../src/retention');
    const c = createRetentionCleanup({ redis, locks, logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }), instanceId: 'cleanup-test', intervalMs: 60_000, jobTtlMs: 7 * 24 * 3600 * 1000, dlqTtlMs: DLQ_TTL_MS });
    const removed = await c.runOnce(now);
    expect(removed.dlq).toBeGreaterThanOrEqual(2);
    expect(removed.job).toBeGreaterThanOrEqual(1);
    expect(await redis.zscore(jobKeys.dlqIndex(), 'ancient')).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndexTenant('oldco'), 'ancient')).toBeNull();
    expect(await redis.zrange(jobKeys.indexAll('oldco'), '0', '-1')).toEqual(['live-job']);
  });
});

describe('workers, pools, topics', () => {
  it('lists online workers from the scheduler snapshot; include_offline adds the stale ones; a malformed entry is skipped, a malformed snapshot lists nothing', async () => {
    expect(valid(S.workerListSchema, await call(rig.url, 'GET', '/api/v1/workers', { key: KEYS.viewer }))).toEqual({ items: [] });
    const now = Date.now();
    const w = (id: string, hb: number) => ({ worker_id: id, pool: 'default', active_jobs: 1, max_parallel_jobs: 4, capabilities: ['echo'], labels: { zone: 'a' }, cpu_load: 0.5, last_heartbeat: hb, ready_topics: [], start_ack: true });
    // what the scheduler's snapshot writer stores (job-store codec), plus one entry no writer of ours produces
    const snap = JSON.parse(encodeWorkerSnapshot({ captured_at: now, writer_id: 'sched-1', workers: [w('w-live', now - 1_000), w('w-stale', now - 60_000)] })) as { workers: unknown[] };
    snap.workers.push({ junk: true }, { ...w('w-bad-time', now), last_heartbeat: new Date(now).toISOString() });
    await redis.set(jobKeys.workerSnapshot(), JSON.stringify(snap));
    const online = valid(S.workerListSchema, await call(rig.url, 'GET', '/api/v1/workers', { key: KEYS.viewer }));
    expect(online.items.map((x) => [x.worker_id, x.online])).toEqual([['w-live', true]]);
    expect(online.items[0]).toEqual({ worker_id: 'w-live', pool: 'default', active_jobs: 1, max_parallel_jobs: 4, capabilities: ['echo'], labels: { zone: 'a' }, cpu_load: 0.5, last_heartbeat: new Date(now - 1_000).toISOString(), online: true });
    const all = valid(S.workerListSchema, await call(rig.url, 'GET', '/api/v1/workers?include_offline=true', { key: KEYS.viewer }));
    expect(all.items.map((x) => [x.worker_id, x.online])).toEqual([['w-live', true], ['w-stale', false]]);
    const one = valid(S.workerSchema, await call(rig.url, 'GET', '/api/v1/workers/w-stale', { key: KEYS.viewer }));
    expect(one).toMatchObject({ pool: 'default', max_parallel_jobs: 4, online: false });
    expectEnvelope(await call(rig.url, 'GET', '/api/v1/workers/nope', { key: KEYS.viewer }), 404, 'worker_not_found');
    expectEnvelope(await call(rig.url, 'GET', '/api/v1/workers?include_offline=maybe', { key: KEYS.viewer }), 400, 'validation_failed');
    await redis.set(jobKeys.workerSnapshot(), JSON.stringify({ workers: [w('w-live', now)] })); // no captured_at / writer_id
    expect(valid(S.workerListSchema, await call(rig.url, 'GET', '/api/v1/workers?include_offline=true', { key: KEYS.viewer }))).toEqual({ items: [] });
    await redis.set(jobKeys.workerSnapshot(), 'not json');
    expect(valid(S.workerListSchema, await call(rig.url, 'GET', '/api/v1/workers', { key: KEYS.viewer }))).toEqual({ items: [] });
    await redis.del(jobKeys.workerSnapshot());
  });

  it('pools and topics come from the applied pools section', async () => {
    expect(valid(S.topicListSchema, await call(rig.url, 'GET', '/api/v1/topics', { key: KEYS.viewer })).items).toEqual([]);
    const put = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { pools: { topics: { 'job.echo': ['default', 'gpu'] }, pools: { gpu: { requires: ['cuda'] } } } } });
    expect(put.status).toBe(204);
    const pools = valid(S.poolListSchema, await call(rig.url, 'GET', '/api/v1/pools', { key: KEYS.viewer }));
    expect(pools.items).toEqual([
      { name: 'default', requires: [], topics: ['job.echo'] },
      { name: 'gpu', requires: ['cuda'], topics: ['job.echo'] },
    ]);
    const topics = valid(S.topicListSchema, await call(rig.url, 'GET', '/api/v1/topics', { key: KEYS.viewer }));
    expect(topics.items).toEqual([{ topic: 'job.echo', pools: ['default', 'gpu'] }]);
  });
});

describe('config API', () => {
  it('merge patch, document form with CAS, validation details, ETag, effective and status', async () => {
    const doc0 = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.viewer }));
    const patch = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'closed' } } });
    expect(patch.status).toBe(204);
    expect(patch.headers.get('etag')).toBe(`"${doc0.revision + 1}"`);
    const doc1 = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.viewer }));
    expect(doc1.data['scheduler']).toEqual({ input_fail_mode: 'closed' });
    expect(doc1.data['pools']).toEqual(doc0.data['pools']);

    const stale = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { data: {}, revision: doc0.revision } });
    expectEnvelope(stale, 409, 'revision_conflict');
    const replaced = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { data: { rate_limits: { rps: 500, burst: 900 } }, revision: doc1.revision } });
    expect(replaced.status).toBe(204);
    const doc2 = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config?scope=system&scope_id=default', { key: KEYS.viewer }));
    expect(doc2.data).toEqual({ rate_limits: { rps: 500, burst: 900 } });

    const bad = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { dispatch_timeout_seconds: -1 } } } });
    expectEnvelope(bad, 400, 'validation_failed');
    expect(JSON.stringify(bad.body['details'])).toContain('timeouts.reconciler.dispatch_timeout_seconds');
    expectEnvelope(await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.operator, body: {} }), 403, 'forbidden');

    const team = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scope: 'team', scope_id: 'blue', data: { rate_limits: { rps: 7 } } } });
    expect(team.status).toBe(204);
    const eff = valid(S.configEffectiveSchema, await call(rig.url, 'GET', '/api/v1/config/effective?team=blue', { key: KEYS.viewer }));
    expect(eff.data['rate_limits']).toEqual({ rps: 7, burst: 900 });

    const st = valid(S.configStatusSchema, await call(rig.url, 'GET', '/api/v1/config/status', { key: KEYS.admin }));
    expect(st.document.revision).toBe(doc2.revision);
    expectEnvelope(await call(rig.url, 'GET', '/api/v1/config/status', { key: KEYS.operator }), 403, 'forbidden');
  });

  it('a section or field no replica knows is refused with 400 naming it, in both write forms, so a typo is never stored and ignored (P66)', async () => {
    const before = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision;
    const typoSection = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeout: { reconciler: { dispatch_timeout_seconds: 5 } } } });
    expectEnvelope(typoSection, 400, 'validation_failed');
    expect(typoSection.body['details']).toEqual([{ path: 'data.timeout', message: 'unknown section; known sections: pools, timeouts, scheduler, rate_limits, safety' }]);
    const typoField = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { dispatch_timout_seconds: 5 } } } });
    expectEnvelope(typoField, 400, 'validation_failed');
    expect(typoField.body['details']).toEqual([
      { path: 'data.timeouts.reconciler.dispatch_timout_seconds', message: 'unknown field; timeouts.reconciler takes dispatch_timeout_seconds, running_timeout_seconds, scan_interval_seconds' },
    ]);
    const docForm = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { data: { rate_limits: { rps: 5, brust: 9 }, pools: { pools: { gpu: { require: ['cuda'] } } } } } });
    expectEnvelope(docForm, 400, 'validation_failed');
    expect((docForm.body['details'] as { path: string }[]).map((d) => d.path).sort()).toEqual(['data.pools.pools.gpu.require', 'data.rate_limits.brust']);
    expect(valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision).toBe(before);
    // Names inherited from Object.prototype are no field either.
    const proto = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { rate_limits: { toString: 1 }, timeouts: { constructor: 5 } } });
    expectEnvelope(proto, 400, 'validation_failed');
    expect((proto.body['details'] as { path: string }[]).map((d) => d.path).sort()).toEqual(['data.rate_limits.toString', 'data.timeouts.constructor']);
    // Topic and pool names are free (even `constructor`); a null deletes, unknown keys included (a stored typo).
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { pools: { topics: { 'job.any-name': ['p1'] }, pools: { constructor: { requires: [] } } }, scheduler: null } })).status).toBe(204);
    // P212: a null on an unknown key that is not stored deletes nothing: refused, nothing written.
    const r1 = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision;
    const noop = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { dispatch_timout_seconds: null } }, timeout: null } });
    expectEnvelope(noop, 400, 'validation_failed');
    expect(noop.body['details']).toEqual([
      { path: 'data.timeouts.reconciler.dispatch_timout_seconds', message: 'unknown field and not stored, so null deletes nothing; timeouts.reconciler takes dispatch_timeout_seconds, running_timeout_seconds, scan_interval_seconds' },
      { path: 'data.timeout', message: 'unknown section and not stored, so null deletes nothing; known sections: pools, timeouts, scheduler, rate_limits, safety' },
    ]);
    expect(valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision).toBe(r1);
    // A typo stored before P66 (or by hand) can still be deleted.
    const raw = JSON.parse((await redis.get('cfg:system:default'))!) as { data: Record<string, unknown> };
    raw.data['timeout'] = { reconciler: { dispatch_timeout_seconds: 5 } };
    raw.data['timeouts'] = { reconciler: { dispatch_timout_seconds: 5 } };
    await redis.set('cfg:system:default', JSON.stringify(raw));
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { dispatch_timout_seconds: null } }, timeout: null } })).status).toBe(204);
    const after = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).data;
    expect(after['timeout']).toBeUndefined();
    expect((after['timeouts'] as Record<string, Record<string, unknown>>)['reconciler']).toEqual({});
    // P213: an empty merge patch, or an empty body, changes nothing and writes nothing.
    const r2 = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision;
    const empty = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: {} });
    expectEnvelope(empty, 400, 'validation_failed');
    expect(empty.body['details']).toEqual([{ path: '(body)', message: expect.stringContaining('an empty merge patch changes nothing') }]);
    const blank = await fetch(`${rig.url}/api/v1/config`, { method: 'PUT', headers: { 'X-API-Key': KEYS.admin, 'Content-Type': 'application/json', 'Content-Length': '0' } });
    expect(blank.status).toBe(400);
    expect(valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision).toBe(r2);
  });

  it('If-Match "<revision>" is compare-and-set for either write form; a malformed one is 400, never ignored; bounds and names a write cannot run are 400 (P91)', async () => {
    const get = async () => valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin }));
    const first = await get();
    const r0 = first.revision;
    const put = (ifMatch: string | undefined, body: unknown) => call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body, headers: ifMatch === undefined ? {} : { 'If-Match': ifMatch } });
    // a stale revision: 409 in both forms, nothing written
    const stalePatch = await put(`"${r0 + 5}"`, { rate_limits: { rps: 11 } });
    expectEnvelope(stalePatch, 409, 'revision_conflict');
    expect(stalePatch.body['revision']).toBe(r0);
    expectEnvelope(await put(`"${r0 + 5}"`, { data: { rate_limits: { rps: 11 } } }), 409, 'revision_conflict');
    // not an ETag, or one naming another revision than the body's: 400 on the header
    for (const bad of ['garbage', `${r0}`, `W/"${r0}"`, `"${r0}", "${r0 + 1}"`]) {
      const res = await put(bad, { rate_limits: { rps: 11 } });
      expectEnvelope(res, 400, 'validation_failed');
      expect((res.body['details'] as { path: string }[])[0]?.path).toBe('If-Match');
    }
    expectEnvelope(await put(`"${r0 + 1}"`, { data: { rate_limits: { rps: 11 } }, revision: r0 }), 400, 'validation_failed');
    expect((await get()).revision).toBe(r0);
    // the current revision writes, and answers the next ETag; * sets no precondition
    const ok = await put(`"${r0}"`, { rate_limits: { rps: 12 } });
    expect(ok.status).toBe(204);
    expect(ok.headers.get('etag')).toBe(`"${r0 + 1}"`);
    expect((await put(`"${r0 + 1}"`, { data: { rate_limits: { rps: 13 } }, revision: r0 + 1 })).status).toBe(204);
    expect((await put('*', { rate_limits: { rps: 14 } })).status).toBe(204);
    expect((await get()).data['rate_limits']).toEqual({ rps: 14 });
    // a rate the shared bucket cannot run, a topic no job can have, an own __proto__ key
    const r3 = (await get()).revision;
    const tiny = await put(undefined, { rate_limits: { rps: 1e-300 } });
    expectEnvelope(tiny, 400, 'validation_failed');
    expect(tiny.body['details']).toEqual([{ path: 'data.rate_limits.rps', message: 'must be between 0.001 and 1000000' }]);
    const topic = await put(undefined, { pools: { topics: { constructor: ['p1'] } } });
    expectEnvelope(topic, 400, 'validation_failed');
    expect((topic.body['details'] as { path: string }[]).map((d) => d.path)).toEqual(['data.pools.topics.constructor']);
    for (const raw of ['{"pools":{"pools":{"__proto__":{"requires":["x"]}}}}', '{"data":{"pools":{"pools":{"__proto__":{"requires":["x"]}}}}}']) {
      const proto = await put(undefined, raw);
      expectEnvelope(proto, 400, 'validation_failed');
      expect(proto.body['details']).toEqual([{ path: 'data.pools.pools.__proto__', message: 'key __proto__ is not allowed' }]);
    }
    // at the top of the document form's data too (zod's record drops it before any check sees it)
    const top = await put(undefined, '{"data":{"__proto__":{"x":1},"rate_limits":{"rps":5}}}');
    expectEnvelope(top, 400, 'validation_failed');
    expect(top.body['details']).toEqual([{ path: 'data.__proto__', message: 'key __proto__ is not allowed' }]);
    expect((await get()).revision).toBe(r3);
    // the limits the later tests run under
    expect((await put(undefined, { rate_limits: first.data['rate_limits'] ?? null })).status).toBe(204);
  });

  it('the document form\'s envelope is strict: a misspelt key is 400 naming it and nothing is written', async () => {
    const get = async (q = '') => valid(S.configDocumentSchema, await call(rig.url, 'GET', `/api/v1/config${q}`, { key: KEYS.admin }));
    const before = await get();
    const teamBefore = await get('?scope=team&scope_id=typo-blue');
    const envelope = 'unknown field; the document form (a body whose data is an object) takes scope, scope_id, data, revision';
    // `revison` dropped: a plain overwrite with no compare-and-set.
    const revison = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { revison: before.revision + 7, data: { rate_limits: { rps: 1 } } } });
    expectEnvelope(revison, 400, 'validation_failed');
    expect(revison.body['details']).toEqual([{ path: 'revison', message: envelope }]);
    // `Scope` / `Scope_id` dropped: all of cfg:system:default replaced by rate_limits alone.
    const scope = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { Scope: 'team', Scope_id: 'typo-blue', data: { rate_limits: { rps: 3, burst: 6 } } } });
    expectEnvelope(scope, 400, 'validation_failed');
    expect(scope.body['details']).toEqual([
      { path: 'Scope', message: envelope },
      { path: 'Scope_id', message: envelope },
    ]);
    // Other problems are still reported beside it.
    const both = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scope: 'tema', data: {}, extra: 1 } });
    expectEnvelope(both, 400, 'validation_failed');
    expect((both.body['details'] as { path: string }[]).map((d) => d.path).sort()).toEqual(['extra', 'scope']);
    const after = await get();
    expect({ revision: after.revision, data: after.data }).toEqual({ revision: before.revision, data: before.data });
    expect((await get('?scope=team&scope_id=typo-blue')).revision).toBe(teamBefore.revision);
    // Spelt right, the same writes land where they were meant to.
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scope: 'team', scope_id: 'typo-blue', data: { rate_limits: { rps: 3 } }, revision: teamBefore.revision } })).status).toBe(204);
    expect((await get('?scope=team&scope_id=typo-blue')).data).toEqual({ rate_limits: { rps: 3 } });
    expect((await get()).revision).toBe(before.revision);
  });

  it('scan_interval_seconds below 0.1 s is refused (0.001 was a leader scanning every millisecond); 0 and 0.3 are taken', async () => {
    const before = valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision;
    const tiny = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { scan_interval_seconds: 0.001 } } } });
    expectEnvelope(tiny, 400, 'validation_failed');
    expect(tiny.body['details']).toEqual([{ path: 'data.timeouts.reconciler.scan_interval_seconds', message: 'must be 0 (the default) or at least 0.1 (100 ms)' }]);
    expect(valid(S.configDocumentSchema, await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin })).revision).toBe(before);
    for (const ok of [0.3, 0]) expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { scan_interval_seconds: ok } } } })).status).toBe(204);
  });

  it('GET /config answers 304 to If-None-Match naming its current revision, 200 with the document otherwise, as documented (P295)', async () => {
    const first = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin });
    const etag = first.headers.get('etag') ?? '';
    expect(etag).toMatch(/^"\d+"$/);
    // node:http, not fetch: fetch adds `Cache-Control: no-cache` to a conditional request, which makes it unconditional
    const same = await new Promise<{ status: number; etag: string | undefined; body: string }>((resolve, reject) => {
      const req = httpGet(`${rig.url}/api/v1/config`, { headers: { 'X-API-Key': KEYS.admin, 'If-None-Match': etag } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: res.headers.etag, body }));
      });
      req.on('error', reject);
    });
    expect(same).toEqual({ status: 304, etag, body: '' });
    const other = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin, headers: { 'If-None-Match': '"999999"' } });
    expect(other.status).toBe(200);
    expect(other.body['revision']).toBe(Number(etag.slice(1, -1)));
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    expect(Object.keys(doc.paths['/api/v1/config']?.['get']?.responses ?? {})).toContain('304');
  });

  it('a stored document that is not JSON is 500 internal on every route that reads it, as the OpenAPI document says', async () => {
    const doc = buildOpenApi() as { paths: Record<string, Record<string, { responses: Record<string, unknown>; requestBody?: { content: Record<string, { schema: unknown }> } }>> };
    const routes: [method: 'GET' | 'PUT', path: string, body?: unknown][] = [
      ['GET', '/api/v1/config'],
      ['PUT', '/api/v1/config', { scheduler: { input_fail_mode: 'closed' } }],
      ['GET', '/api/v1/config/effective'],
      ['GET', '/api/v1/config/status'],
      // P295: the pools section read from the same document (was 503 redis_unavailable)
      ['GET', '/api/v1/pools'],
      ['GET', '/api/v1/topics'],
    ];
    const raw = await redis.get('cfg:system:default');
    await redis.set('cfg:system:default', '{not json');
    try {
      for (const [method, path, body] of routes) {
        expectEnvelope(await call(rig.url, method, path, { key: KEYS.admin, body }), 500, 'internal');
        expect({ path, method, has500: '500' in (doc.paths[path]?.[method.toLowerCase()]?.responses ?? {}) }).toEqual({ path, method, has500: true });
      }
    } finally {
      if (raw === null) await redis.del('cfg:system:default');
      else await redis.set('cfg:system:default', raw);
    }
    // The PUT body as documented is the one parsed: scope enum, revision >= 0, a strict envelope.
    const put = JSON.stringify(doc.paths['/api/v1/config']?.['put']?.requestBody?.content['application/json']?.schema);
    expect(put).toContain('"enum":["system","org","team","workflow","step"]');
    expect(put).toContain('"minimum":0');
    expect(put).toContain('"additionalProperties":false');
  });

  it('a lone surrogate is refused with 400 and the document stays writable (Redis cjson could not decode it)', async () => {
    // Raw text: JSON.stringify would escape it the same way; the escape is what reaches Redis.
    const bad = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: '{"pools":{"topics":{"job.note":["\\ud800"]}}}' });
    expectEnvelope(bad, 400, 'validation_failed');
    expect(JSON.stringify(bad.body['details'])).toContain('data.pools.topics.job.note.0');
    const next = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { pools: { topics: { 'job.note': ['fine \u{1F600}'] } } } });
    expect(next.status).toBe(204);
    // A bundle the kernels would refuse is refused here (P44), not stored and left DRIFTED.
    const throttle = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { safety: { bundles: { ml: { rules: [{ id: 't', decision: 'throttle' }] } } } } });
    expectEnvelope(throttle, 400, 'validation_failed');
    expect(throttle.body['details']).toEqual([{ path: 'data.safety', message: "safety.bundles.ml: rule 't' (rules[0]): velocity: required when decision is throttle" }]);
    const huge = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { timeouts: { reconciler: { scan_interval_seconds: 3_000_000 } } } });
    expectEnvelope(huge, 400, 'validation_failed');
    expect(JSON.stringify(huge.body['details'])).toContain('timeouts.reconciler.scan_interval_seconds');
  });

  it('GET /status is admin-only and carries no secrets', async () => {
    const r = await call(rig.url, 'GET', '/api/v1/status', { key: KEYS.admin });
    const st = valid(S.statusSchema, r);
    expect(st).toMatchObject({ instance_id: 'gw-test', nats: { connected: true }, redis: { ok: true } });
    const text = JSON.stringify(r.body);
    for (const secret of [rig.redis.url, rig.nats.url, KEYS.admin, KEYS.operator]) expect(text).not.toContain(secret);
    expectEnvelope(await call(rig.url, 'GET', '/api/v1/status', { key: KEYS.operator }), 403, 'forbidden');
  });
});
