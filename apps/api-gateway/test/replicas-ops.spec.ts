// Behaviours of the B routes that must hold across two gateway replicas on
// one Redis + NATS: one new job per DLQ entry under concurrent retries split
// over both, one winner for concurrent cancels, one DLQ cleanup leader with
// failover, and the same worker list from every replica.
import { createJobStore, encodeWorkerSnapshot, jobKeys } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { DLQ_CLEANUP_LOCK } from '../src/retention';
import { KEYS, call } from './harness';
import { startReplicas, type Replicas } from './replicas';

let rs: Replicas;
let redis: RedisClient;

beforeAll(async () => {
  rs = await startReplicas(2);
  redis = createRedis({ url: rs.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});
afterAll(async () => {
  await closeRedis(redis);
  await rs.stop();
});

const url = (i: number) => rs.urls[i % rs.urls.length] as string;

async function submit(i: number): Promise<string> {
  const r = await call(url(i), 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic: 'job.echo' } });
  expect(r.status).toBe(200);
  return String(r.body['job_id']);
}

it('20 concurrent retries of one DLQ entry split over two replicas create exactly one job', async () => {
  const id = await submit(0);
  const store = createJobStore(redis, { jobTtlMs: 60_000 });
  const lease = await createLocks(redis).acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 't', waitMs: 2_000 });
  expect((await store.transition(id, 'FAILED', { token: lease!.token, patch: { error: { code: 'x', message: 'boom' } } })).ok).toBe(true);
  await lease!.release();
  const before = await redis.zcard(jobKeys.indexAll('acme'));
  const res = await Promise.all(Array.from({ length: 20 }, (_, i) => call(url(i), 'POST', `/api/v1/dlq/${id}/retry`, { key: KEYS.operator })));
  expect(res.map((r) => r.status)).toEqual(Array(20).fill(200));
  expect(new Set(res.map((r) => r.body['job_id'])).size).toBe(1);
  expect(res.filter((r) => r.body['status'] === undefined)).toHaveLength(1);
  expect(await redis.zcard(jobKeys.indexAll('acme'))).toBe(before + 1);
});

it('concurrent cancels on both replicas: one 200, the rest 409 job_terminal', async () => {
  const id = await submit(1);
  const res = await Promise.all(Array.from({ length: 6 }, (_, i) => call(url(i), 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator })));
  expect(res.filter((r) => r.status === 200)).toHaveLength(1);
  for (const r of res.filter((x) => x.status !== 200)) expect({ status: r.status, code: r.body['code'] }).toEqual({ status: 409, code: 'job_terminal' });
});

it('both replicas list the same workers from the snapshot', async () => {
  const now = Date.now();
  await redis.set(jobKeys.workerSnapshot(), encodeWorkerSnapshot({ captured_at: now, writer_id: 's', workers: [{ worker_id: 'w1', pool: 'p', active_jobs: 0, max_parallel_jobs: 1, capabilities: [], labels: {}, cpu_load: 0, last_heartbeat: now, ready_topics: [], start_ack: false }] }));
  const a = await call(url(0), 'GET', '/api/v1/workers', { key: KEYS.viewer });
  const b = await call(url(1), 'GET', '/api/v1/workers', { key: KEYS.viewer });
  expect(a.body).toEqual(b.body);
  expect((a.body['items'] as unknown[]).length).toBe(1);
});

it('exactly one replica leads DLQ cleanup; stopping it hands the lease to the other', async () => {
  await waitFor(() => rs.gateways.length === 2 && redis.get(DLQ_CLEANUP_LOCK).then((v) => v !== null), 10_000);
  const holder = String(await redis.get(DLQ_CLEANUP_LOCK));
  const leaderIdx = holder.startsWith('gw-1:') ? 0 : 1;
  expect(holder.startsWith(`gw-${leaderIdx + 1}:`)).toBe(true);
  await rs.gateways[leaderIdx]!.stop();
  const other = `gw-${2 - leaderIdx}:`;
  // Released on stop (D7); the follower campaigns every 5 s.
  await waitFor(async () => (await redis.get(DLQ_CLEANUP_LOCK))?.startsWith(other) ?? false, 12_000);
}, 20_000);
