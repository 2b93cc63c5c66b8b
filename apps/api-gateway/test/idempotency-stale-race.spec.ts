// P307: a waiting duplicate frees a claim it takes for a dead winner's (no record 30 s after the
// claim). It read "no record" first and freed the claim after: a frozen winner's create landing in
// between went through (the claim still named its job), the free then took the claim of a job that
// exists, and the duplicate claimed the key for a second job (two jobs, both run, one key). The
// replica's job store is wrapped so the winner's record lands right after the waiter's
// last read of it, past the wait's deadline: the free must see the record and keep the claim.
import { createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import { createRedis, closeRedis, scanKeys, type RedisClient } from '@cordum/redis';
import { IDEMPOTENCY_WAIT_MS, STALE_CLAIM_MS } from '../src/submit/service';
import { KEYS, call } from './harness';
import { startReplicas, type Replicas } from './replicas';

const JOB_TTL_MS = 7 * 24 * 3600 * 1000;
const KEY = 'race-1';
const WINNER = 'frozen-winner-job';

let r: Replicas;
let redis: RedisClient;
/** Set when the duplicate's request goes out; the winner's create lands past its wait's deadline. */
let sentAt = Number.POSITIVE_INFINITY;
let landed = false;

const landWinnerAfterRead = (store: JobStore): JobStore => ({
  ...store,
  async getJob(id) {
    const job = await store.getJob(id);
    if (id === WINNER && job === null && !landed && Date.now() > sentAt + IDEMPOTENCY_WAIT_MS - 500) {
      // A read near the wait's deadline answers late, past it (the request reached the wait well
      // within a second of being sent), so the waiter's next step is the stale-claim free.
      while (Date.now() < sentAt + IDEMPOTENCY_WAIT_MS + 1_000) await new Promise((res) => setTimeout(res, 20));
      landed = true;
      // The frozen winner wakes and writes its record: the claim still names its job.
      await createJobStore(redis, { jobTtlMs: JOB_TTL_MS }).createJob({
        id: WINNER,
        tenant: 'acme',
        topic: 'job.echo',
        traceId: 'trace-winner',
        priority: 'interactive',
        labels: {},
        prompt: 'once',
        context: {},
        principalId: 'operator',
        riskTags: [],
        requires: [],
        idempotencyKey: KEY,
        initialState: 'PENDING',
      });
    }
    return job; // the read from before the record landed
  },
});

beforeAll(async () => {
  r = await startReplicas(1, {}, { wrapStore: landWinnerAfterRead });
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await r.stop();
});

it('a stale claim is not freed once its frozen winner\'s record has landed: the duplicate answers with that job, and the key keeps one job', async () => {
  const claim = jobKeys.idempotency('acme', KEY);
  // Made more than STALE_CLAIM_MS ago by a winner that froze before its create.
  await redis.set(claim, WINNER, 'PX', JOB_TTL_MS - STALE_CLAIM_MS - 1_000);
  sentAt = Date.now();
  const res = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'once', topic: 'job.echo', idempotency_key: KEY } });
  expect(landed).toBe(true);
  expect({ status: res.status, job_id: res.body['job_id'] }).toEqual({ status: 200, job_id: WINNER });
  expect(await redis.get(claim)).toBe(WINNER);
  const records: string[] = [];
  for await (const k of scanKeys(redis, 'job:meta:{*}')) if ((await redis.hget(k, 'idempotencyKey')) === JSON.stringify(KEY)) records.push(k);
  expect(records).toEqual([jobKeys.meta(WINNER)]);
  expect(r.logs.some((l) => l.includes('freed a stale idempotency claim without a job'))).toBe(false);
});
