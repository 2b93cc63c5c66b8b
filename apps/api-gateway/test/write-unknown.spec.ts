// P335: a config write or a DLQ delete whose answer did not come (Redis frozen with it on the
// wire) may have been applied; they answered 503 `redis_unavailable`, which says it was not, and
// the client's repeat then met its own write (409 `revision_conflict` on its If-Match, or 404 for
// the entry it deleted). They now answer 503 `state_unknown`, as an approve or a cancel does
// (P258), with a message saying how to learn the outcome.
import { jobKeys } from '@cordum/job-store';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call, expectEnvelope, startRig, type Rig } from './harness';

let rig: Rig;
let redis: RedisClient;
let frozen = false;

/** Set: the next DLQ delete freezes Redis right before it is sent (after the entry's read). */
let freezeBeforeDelete = false;

beforeAll(async () => {
  rig = await startRig(
    {},
    {
      deps: {
        wrapStore: (store) => ({
          ...store,
          async deleteDlq(entry) {
            if (freezeBeforeDelete) {
              freezeBeforeDelete = false;
              frozen = true;
              await rig.redis.process.freeze();
            }
            return store.deleteDlq(entry);
          },
        }),
      },
    },
  );
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0, name: 'write-unknown-spec' });
});

afterAll(async () => {
  if (frozen) rig.redis.process.kill('SIGCONT');
  await closeRedis(redis);
  await rig.stop();
});

/** Runs `fn` with Redis frozen (SIGSTOP), thawed after it. */
async function whileFrozen<T>(fn: () => Promise<T>): Promise<T> {
  frozen = true;
  await rig.redis.process.freeze();
  try {
    return await fn();
  } finally {
    rig.redis.process.kill('SIGCONT');
    frozen = false;
  }
}

it('a config PUT whose answer does not come is 503 state_unknown; it was applied, and its repeat on the same If-Match is 409', async () => {
  expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'open' } } })).status).toBe(204);
  const before = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin });
  const etag = before.headers.get('etag') ?? '';
  const revision = Number(before.body['revision']);
  const body = { data: { scheduler: { input_fail_mode: 'closed' } } };
  const put = await whileFrozen(() => call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body, headers: { 'If-Match': etag } }));
  // Before: 503 redis_unavailable ("not applied").
  expectEnvelope(put, 503, 'state_unknown');
  expect(String(put.body['error'])).toContain('GET /api/v1/config');
  const after = await waitFor(async () => {
    const g = await call(rig.url, 'GET', '/api/v1/config', { key: KEYS.admin });
    return g.status === 200 && Number(g.body['revision']) === revision + 1 ? g : null;
  }, 10_000, { message: 'the write landed after the thaw' });
  expect(after.body['data']).toMatchObject({ scheduler: { input_fail_mode: 'closed' } });
  expectEnvelope(await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body, headers: { 'If-Match': etag } }), 409, 'revision_conflict');
}, 30_000);

it('a DLQ delete whose answer does not come is 503 state_unknown, saying how a repeat tells', async () => {
  const denied = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.deny.drop-table' } });
  expect(denied.status).toBe(403);
  const id = String(denied.body['job_id']);
  await waitFor(async () => (await redis.exists(jobKeys.dlqEntry(id))) === 1, 5_000, { message: 'DLQ entry' });
  freezeBeforeDelete = true;
  let del;
  try {
    del = await call(rig.url, 'DELETE', `/api/v1/dlq/${id}`, { key: KEYS.admin });
  } finally {
    rig.redis.process.kill('SIGCONT');
    frozen = false;
  }
  expect(freezeBeforeDelete).toBe(false);
  expectEnvelope(del, 503, 'state_unknown');
  expect(String(del.body['error'])).toContain('404 dlq_not_found');
  // Applied or not (the gateway may have dropped the connection with it unread): the repeat says
  // which, 404 if it was, 204 if not, and the entry is gone either way.
  const again = await waitFor(async () => {
    const r = await call(rig.url, 'DELETE', `/api/v1/dlq/${id}`, { key: KEYS.admin });
    return r.status === 503 ? null : r;
  }, 10_000, { message: 'a repeat after the thaw' });
  expect([204, 404]).toContain(again.status);
  if (again.status === 404) expectEnvelope(again, 404, 'dlq_not_found');
  expect(await redis.exists(jobKeys.dlqEntry(id))).toBe(0);
}, 30_000);
