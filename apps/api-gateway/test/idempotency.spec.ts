// Idempotency (D25) across two replicas: one job for concurrent duplicates,
// losers answer with the winner's response, orphaned claims are freed.
import { createJobStore, jobKeys } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { KEYS, call } from './harness';
import { startReplicas, type Replicas } from './replicas';

let r: Replicas;
let redis: RedisClient;
const JOB_TTL_MS = 7 * 24 * 3600 * 1000;

beforeAll(async () => {
  r = await startReplicas(2);
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await r.stop();
});

it('20 concurrent submits with one key split over two gateways create one job; every answer names it', async () => {
  const body = { prompt: 'once', topic: 'job.echo', idempotency_key: 'burst-1' };
  const res = await Promise.all(Array.from({ length: 20 }, (_, i) => call(r.urls[i % 2]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body })));
  expect(res.map((x) => x.status)).toEqual(Array(20).fill(200));
  const ids = new Set(res.map((x) => x.body['job_id']));
  expect(ids.size).toBe(1);
  const [id] = [...ids] as string[];
  expect(await redis.get('job:idempotency:acme:burst-1')).toBe(id);
  expect(await redis.pttl('job:idempotency:acme:burst-1')).toBeGreaterThan(JOB_TTL_MS - 60_000); // TTL = job TTL
  expect(await redis.zcard('job:index:{acme}:all')).toBe(1);
  // A held job replays as held: the loser gets the winner's exact answer.
  const hold = { prompt: 'x', topic: 'job.hold.deploy', idempotency_key: 'hold-1' };
  const [h1, h2] = await Promise.all([call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: hold }), call(r.urls[1]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: hold })]);
  expect(h2!.body).toEqual(h1!.body);
  expect(h1!.body['status']).toBe('approval_required');
});

it('an orphaned claim (winner died before writing its job) is freed after the wait instead of blocking the key for the job TTL', async () => {
  // Made 31 s ago by a replica that died: value = a job id that never got a record.
  await redis.set('job:idempotency:acme:orphan-1', 'dead-job-id', 'PX', JOB_TTL_MS - 31_000);
  const t0 = Date.now();
  const res = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.echo', idempotency_key: 'orphan-1' } });
  expect(res.status).toBe(200);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(5_000); // waited the D25 5 s for a possibly live winner first
  expect(res.body['job_id']).not.toBe('dead-job-id');
  expect(await redis.get('job:idempotency:acme:orphan-1')).toBe(res.body['job_id']);
  expect(r.logs.some((l) => l.includes('freed a stale idempotency claim without a job'))).toBe(true);
});

it('a young claim without a job is 409 idempotency_in_progress after ≤ 5 s, and kept', async () => {
  await redis.set('job:idempotency:acme:young-1', 'in-flight-id', 'PX', JOB_TTL_MS - 1_000);
  const res = await call(r.urls[1]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'x', topic: 'job.echo', idempotency_key: 'young-1' } });
  expect(res.status).toBe(409);
  expect(res.body['code']).toBe('idempotency_in_progress');
  expect(res.ms).toBeLessThan(7_000);
  expect(await redis.get('job:idempotency:acme:young-1')).toBe('in-flight-id');
});

it('a retry of a key gets the first answer, 200, after the scheduler denied the job; the record keeps the state it was created in (P166)', async () => {
  const body = { prompt: 'later denied', topic: 'job.echo', idempotency_key: 'denied-later-1' };
  const first = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(first.status).toBe(200);
  const id = String(first.body['job_id']);
  // The scheduler's Check denies it (a rule that came after the submit), as intake writes it.
  const lease = await createLocks(redis).acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'scheduler-test', waitMs: 2_000 });
  const denied = await createJobStore(redis, { jobTtlMs: JOB_TTL_MS }).transition(id, 'DENIED', {
    token: lease!.token,
    from: ['PENDING'],
    patch: { safety: { decision: 'deny', reason: 'a rule added later', ruleId: 'deny-later', policySnapshot: 's2' }, error: { code: 'policy_denied', message: 'a rule added later' } },
  });
  await lease!.release();
  expect(denied.ok).toBe(true);
  for (const url of r.urls) {
    const retry = await call(url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
    expect({ status: retry.status, body: retry.body }).toEqual({ status: 200, body: first.body });
  }
  expect(await redis.hget(jobKeys.meta(id), 'submitState')).toBe(JSON.stringify('PENDING'));
  // An unkeyed job carries no such field.
  const plain = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'no key', topic: 'job.echo' } });
  expect(await redis.hexists(jobKeys.meta(String(plain.body['job_id'])), 'submitState')).toBe(0);
});
