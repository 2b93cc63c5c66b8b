// A create that Redis runs after its reply timed out (decisions.md P39). Redis
// frozen (SIGSTOP) while a keyed submit's create is on the wire: the gateway's
// command times out and it answers 503, but Redis runs the create once it is
// resumed, so the job exists and the replayer will run it. The answer must say
// so (503 submit_state_unknown with the job id) and the idempotency claim must
// keep naming that job, so the client's retry of the key gets it instead of a
// second job. Before P39 the answer was redis_unavailable without an id and the
// claim's release, queued behind the create, freed the key for a second job.
import { scanKeys, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call, expectEnvelope } from './harness';
import { heldEvaluator, startHeldReplicas, type Replicas } from './replicas';

const KEY = 'frozen-create-1';
const CLAIM = `job:idempotency:acme:${KEY}`;

let r: Replicas;
let redis: RedisClient;
let frozen = false;
let holding = false;
/** Once `holding` is set, the next Evaluate waits for the latch, so the test can freeze Redis between the claim and the create. */
const hold = heldEvaluator(() => holding);

const thaw = (): void => {
  if (frozen) r.redis.process.kill('SIGCONT');
  frozen = false;
};

let stop: () => Promise<void> = async () => undefined;
beforeAll(async () => {
  ({ r, redis, stop } = await startHeldReplicas(1, hold));
});
afterAll(async () => {
  thaw();
  await stop();
});

it('a keyed create that times out while Redis is frozen answers 503 submit_state_unknown with its job id, and the key keeps that job', async () => {
  // One job first, so Redis has the create script cached: a frozen EVALSHA then runs on the thaw
  // (an uncached one would answer NOSCRIPT to a client that gave up, and nothing would be created).
  expect((await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'warm', topic: 'job.echo' } })).status).toBe(200);
  const body = { prompt: 'once', topic: 'job.echo', idempotency_key: KEY };
  holding = true;
  const first = call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  await waitFor(async () => hold.held() === 1 && (await redis.get(CLAIM)) !== null, 5_000, { message: 'claimed, Evaluate held' });
  const claimed = await redis.get(CLAIM);

  frozen = true;
  await r.redis.process.freeze();
  hold.release(); // the create goes out to a frozen Redis
  const answer = await first;
  thaw();
  expectEnvelope(answer, 503, 'submit_state_unknown');
  expect(answer.body['job_id']).toBe(claimed);

  // Redis ran the create once it resumed: the job exists, PENDING, and the key still names it.
  await waitFor(async () => (await redis.exists(`job:meta:{${String(claimed)}}`)) === 1, 5_000, { message: 'the create ran after the thaw' });
  expect(await redis.get(CLAIM)).toBe(claimed);

  const retry = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(retry.status).toBe(200);
  expect(retry.body['job_id']).toBe(claimed);
  const records: string[] = [];
  for await (const k of scanKeys(redis, 'job:meta:{*}')) if ((await redis.hget(k, 'idempotencyKey')) === JSON.stringify(KEY)) records.push(k);
  expect(records).toEqual([`job:meta:{${String(claimed)}}`]);
}, 30_000);

it('a keyed claim that times out while Redis is frozen answers 503 and is released once Redis runs it, so a retry of the key gets a job at once (P165)', async () => {
  const key = 'frozen-claim-1';
  const body = { prompt: 'claim', topic: 'job.echo', idempotency_key: key };
  frozen = true;
  await r.redis.process.freeze();
  const answer = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  thaw();
  expect(answer.status).toBe(503);
  expect(answer.body['job_id']).toBeUndefined();
  // The claim ran after the thaw, and so did its release: the key is free.
  await waitFor(async () => (await redis.get(`job:idempotency:acme:${key}`)) === null, 5_000, { message: 'the late claim released' });
  const retry = await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });
  expect(retry.status).toBe(200);
  expect(await redis.get(`job:idempotency:acme:${key}`)).toBe(retry.body['job_id']);
}, 30_000);
