// P325: a waiting duplicate took any FAILED `bus_unavailable` job for one failed at submit (D11,
// never accepted), whatever its attempts. A job that ran and whose worker reported that code
// (P102: an ordinary failure, in the DLQ) was then no answer: a repeat of its key more than 30 s
// after the claim waited out its 5 s, freed the claim as stale and ran the request again as a
// second job. Now only `failedAtSubmit` (attempts 0) is refused, as everywhere else.
import { createJobStore, jobKeys } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { closeRedis, createRedis, scanKeys, type RedisClient } from '@cordum/redis';
import { STALE_CLAIM_MS } from '../src/submit/service';
import { KEYS, call, runJobAsScheduler } from './harness';
import { startReplicas, type Replicas } from './replicas';

const JOB_TTL_MS = 7 * 24 * 3600 * 1000;
const KEY = 'ran-then-bus-unavailable';

let r: Replicas;
let redis: RedisClient;

beforeAll(async () => {
  r = await startReplicas(1);
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await r.stop();
});

it('a repeat of the key of a job that ran and failed with bus_unavailable answers with that job at once, and the key keeps one job', async () => {
  const body = { prompt: 'once', topic: 'job.echo', idempotency_key: KEY };
  const first = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(first.status).toBe(200);
  const id = String(first.body['job_id']);
  // It ran (attempts 1) and its worker reported bus_unavailable: FAILED, dead-lettered.
  const store = createJobStore(redis, { jobTtlMs: JOB_TTL_MS });
  const locks = createLocks(redis);
  await runJobAsScheduler(store, locks, id);
  const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  const failed = await store.transition(id, 'FAILED', { token: lease!.token, patch: { error: { code: 'bus_unavailable', message: 'the worker could not reach its bus' } } });
  await lease!.release();
  expect(failed.ok).toBe(true);
  expect(await store.getDlq(id)).not.toBeNull();
  // The client repeats the request more than STALE_CLAIM_MS after the claim (its answer was lost).
  const claim = jobKeys.idempotency('acme', KEY);
  await redis.pexpire(claim, JOB_TTL_MS - STALE_CLAIM_MS - 1_000);


  const again = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  // Before: 200 with a new job id after the 5 s wait, the request run a second time.
  expect({ status: again.status, job_id: again.body['job_id'] }).toEqual({ status: 200, job_id: id });
  expect(await redis.get(claim)).toBe(id);
  const records: string[] = [];
  for await (const k of scanKeys(redis, 'job:meta:{*}')) if ((await redis.hget(k, 'idempotencyKey')) === JSON.stringify(KEY)) records.push(k);
  expect(records).toEqual([jobKeys.meta(id)]);
});
