// Tenant isolation sweep: tenant B (globex) cannot read, list, cancel,
// approve, reject, retry or delete anything of tenant A (acme): not by path, not by a
// spoofed X-Tenant-ID, not by tenant_id in a body. Foreign objects are 404
// (indistinguishable from missing), spoofing is 403, and A's data is unchanged.
import { createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { API_KEYS_JSON, KEYS, call, expectEnvelope, startRig, type Rig } from './harness';

const GLOBEX_ADMIN = 'admin-key-globex-01';
const GLOBEX_VIEWER = 'viewer-key-globex-1';

let rig: Rig;
let redis: RedisClient;
let store: JobStore;
const a = { pending: '', held: '', denied: '', failed: '', key: '' };

beforeAll(async () => {
  const keys = [...(JSON.parse(API_KEYS_JSON) as object[]), { key: GLOBEX_ADMIN, tenant: 'globex', role: 'admin', principal_id: 'gadmin' }, { key: GLOBEX_VIEWER, tenant: 'globex', role: 'viewer', principal_id: 'gview' }];
  rig = await startRig({ CORDUM_API_KEYS: JSON.stringify(keys) });
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  store = createJobStore(redis, { jobTtlMs: 60_000 });
  const submit = async (topic: string) => String((await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'secret of acme', topic } })).body['job_id']);
  a.pending = await submit('job.echo');
  a.held = await submit('job.hold.deploy');
  a.denied = await submit('job.deny.drop');
  a.failed = await submit('job.echo');
  const locks = createLocks(redis);
  const lease = await locks.acquire({ key: jobKeys.lock(a.failed), fenceKey: jobKeys.fence(a.failed), ttlMs: 10_000, owner: 't', waitMs: 2_000 });
  await store.transition(a.failed, 'FAILED', { token: lease!.token, patch: { error: { code: 'x', message: 'boom' } } });
  await lease!.release();
  const k = await call(rig.url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'viewer', name: 'acme-ci' } });
  a.key = String(k.body['id']);
  // B has objects of its own, so its lists are non-trivial.
  await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.globex, body: { prompt: 'globex', topic: 'job.deny.x' } });
  await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.globex, body: { prompt: 'globex', topic: 'job.hold.b' } });
});
afterAll(async () => {
  await closeRedis(redis);
  await rig.stop();
});

const allA = () => [a.pending, a.held, a.denied, a.failed];

async function listAll(path: string, key: string, tenant?: string): Promise<string> {
  let out = '';
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const r = await call(rig.url, 'GET', cursor ? `${path}${sep}cursor=${cursor}` : path, { key, tenant });
    expect(r.status).toBe(200);
    out += JSON.stringify(r.body);
    cursor = (r.body['next_cursor'] as string | null | undefined) ?? null;
    if (!cursor) break;
  }
  return out;
}

describe('tenant isolation sweep (B = globex vs A = acme)', () => {
  it('B cannot read A\'s jobs or their decisions by path (404, like a missing job)', async () => {
    for (const id of allA()) {
      for (const key of [KEYS.globex, GLOBEX_ADMIN, GLOBEX_VIEWER]) {
        expectEnvelope(await call(rig.url, 'GET', `/api/v1/jobs/${id}`, { key }), 404, 'job_not_found');
        expectEnvelope(await call(rig.url, 'GET', `/api/v1/jobs/${id}/decisions`, { key }), 404, 'job_not_found');
      }
      // A `*` key acting for globex is globex.
      expectEnvelope(await call(rig.url, 'GET', `/api/v1/jobs/${id}`, { key: KEYS.star, tenant: 'globex' }), 404, 'job_not_found');
    }
  });

  it('B\'s lists (jobs in every state, DLQ, keys) contain nothing of A', async () => {
    const texts = [
      await listAll('/api/v1/jobs?limit=1', KEYS.globex),
      await listAll('/api/v1/dlq?limit=1', KEYS.globex),
      await listAll('/api/v1/approvals?limit=1', KEYS.globex),
      await listAll('/api/v1/approvals', GLOBEX_VIEWER), // B's own held job is listed
      JSON.stringify((await call(rig.url, 'GET', '/api/v1/auth/keys', { key: GLOBEX_ADMIN })).body),
    ];
    for (const st of ['PENDING', 'APPROVAL_REQUIRED', 'DENIED', 'FAILED']) texts.push(await listAll(`/api/v1/jobs?state=${st}`, GLOBEX_VIEWER));
    const all = texts.join('\n');
    expect(all).toContain('globex'); // B sees its own
    for (const id of [...allA(), a.key]) expect(all).not.toContain(id);
    expect(all).not.toContain('acme');
    // ...while A does see them (the sweep would pass vacuously otherwise).
    const aJobs = await listAll('/api/v1/jobs', KEYS.viewer);
    for (const id of allA()) expect(aJobs).toContain(id);
    expect(await listAll('/api/v1/approvals', KEYS.viewer)).toContain(a.held);
  });

  it('B cannot cancel, retry, delete or approve A\'s objects', async () => {
    for (const id of allA()) {
      expectEnvelope(await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.globex }), 404, 'job_not_found');
      expectEnvelope(await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: GLOBEX_ADMIN }), 404, 'job_not_found');
      for (const key of [KEYS.globex, GLOBEX_ADMIN]) {
        expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${id}/approve`, { key, body: {} }), 404, 'job_not_found');
        expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${id}/reject`, { key, body: { reason: 'x' } }), 404, 'job_not_found');
      }
      expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${id}/approve`, { key: KEYS.star, tenant: 'globex' }), 404, 'job_not_found');
    }
    for (const id of [a.denied, a.failed]) {
      expectEnvelope(await call(rig.url, 'POST', `/api/v1/dlq/${id}/retry`, { key: KEYS.globex }), 404, 'dlq_not_found');
      expectEnvelope(await call(rig.url, 'DELETE', `/api/v1/dlq/${id}`, { key: GLOBEX_ADMIN }), 404, 'dlq_not_found');
    }
    const del = await call(rig.url, 'DELETE', `/api/v1/auth/keys/${a.key}`, { key: GLOBEX_ADMIN });
    expect(del.status).toBe(404);
  });

  it('spoofing A by X-Tenant-ID or by tenant_id in a body is 403 tenant_mismatch', async () => {
    for (const key of [KEYS.globex, GLOBEX_ADMIN, GLOBEX_VIEWER]) {
      expectEnvelope(await call(rig.url, 'GET', `/api/v1/jobs/${a.pending}`, { key, tenant: 'acme' }), 403, 'tenant_mismatch');
      expectEnvelope(await call(rig.url, 'GET', '/api/v1/jobs', { key, tenant: 'acme' }), 403, 'tenant_mismatch');
      expectEnvelope(await call(rig.url, 'GET', '/api/v1/dlq', { key, tenant: 'acme' }), 403, 'tenant_mismatch');
    }
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/jobs/${a.pending}/cancel`, { key: KEYS.globex, tenant: 'acme' }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/jobs/${a.pending}/cancel`, { key: KEYS.globex, body: { tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/dlq/${a.failed}/retry`, { key: KEYS.globex, body: { tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'DELETE', `/api/v1/dlq/${a.failed}`, { key: GLOBEX_ADMIN, tenant: 'acme' }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.globex, body: { prompt: 'x', topic: 'job.echo', tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'GET', '/api/v1/approvals', { key: GLOBEX_VIEWER, tenant: 'acme' }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${a.held}/approve`, { key: KEYS.globex, tenant: 'acme' }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${a.held}/approve`, { key: KEYS.globex, body: { tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', `/api/v1/approvals/${a.held}/reject`, { key: GLOBEX_ADMIN, body: { tenant_id: 'acme' } }), 403, 'tenant_mismatch');
    expectEnvelope(await call(rig.url, 'POST', '/api/v1/policy/evaluate', { key: KEYS.globex, body: { topic: 'job.echo', tenant_id: 'acme' } }), 403, 'tenant_mismatch');
  });

  it('an admin of another tenant cannot change the deployment-wide config: 403, the document unchanged (P320)', async () => {
    const before = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.viewer });
    const patch = { safety: { bundles: { takeover: { rules: [{ id: 'deny-acme', match: { tenants: ['acme'] }, decision: 'deny' }] } } } };
    const refused = await call(rig.url, 'PUT', '/api/v1/config', { key: GLOBEX_ADMIN, body: patch });
    expectEnvelope(refused, 403, 'forbidden');
    expect(String(refused.body['error'])).toContain("only an admin key of the deployment's tenant (TENANT_ID, 'acme')");
    const doc = { scope: 'system', scope_id: 'default', data: { rate_limits: { rps: 0.001, burst: 1 } } };
    expectEnvelope(await call(rig.url, 'PUT', '/api/v1/config', { key: GLOBEX_ADMIN, body: doc }), 403, 'forbidden');
    expect((await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.viewer })).body).toEqual(before.body);
    // the deployment's own admin still may
    expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'closed' } } })).status).toBe(204);
  });

  it('A\'s objects are untouched after the sweep', async () => {
    expect((await store.getJob(a.pending))?.state).toBe('PENDING');
    const held = await store.getJob(a.held);
    expect(held?.state).toBe('APPROVAL_REQUIRED');
    expect(held?.approval).toBeUndefined();
    expect(await store.getDlq(a.denied)).not.toBeNull();
    expect(await store.getDlq(a.failed)).not.toBeNull();
    expect(await redis.get(jobKeys.dlqRetry(a.failed))).toBeNull();
    const keys = await call(rig.url, 'GET', '/api/v1/auth/keys', { key: KEYS.admin });
    expect(JSON.stringify(keys.body)).toContain(a.key);
    expect(JSON.stringify(keys.body)).not.toMatch(/"revoked":true/);
  });
});
