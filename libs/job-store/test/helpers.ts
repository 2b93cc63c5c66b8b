import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedisBackend, type RedisBackend, type RedisBackendKind } from '@cordum/testing';
import { createJobStore, jobKeys, type JobStore, type NewJob } from '../src';

let seq = 0;
export function uniqueId(prefix = 'job'): string {
  seq += 1;
  return `${prefix}-${process.pid}-${Date.now()}-${seq}`;
}

export function newJob(over: Partial<NewJob> = {}): NewJob {
  return {
    id: uniqueId(),
    tenant: 'acme',
    topic: 'job.echo',
    traceId: 'trace-1',
    priority: 'interactive',
    labels: { team: 'a' },
    prompt: 'hello',
    context: { x: 1 },
    principalId: 'user-1',
    riskTags: [],
    requires: [],
    initialState: 'PENDING',
    ...over,
  };
}

/** Sets the job lock by hand (what @cordum/locks does at acquire), returning the token. */
export async function holdLock(redis: RedisClient, id: string, token = `test:${Math.floor(Math.random() * 1e9)}`): Promise<string> {
  await redis.set(jobKeys.lock(id), token, 'PX', 30_000);
  return token;
}

/** Drives a fresh job into `path` states in order (each must be legal). */
export async function drive(store: JobStore, redis: RedisClient, j: NewJob, path: string[]): Promise<string> {
  await store.createJob(j);
  const token = await holdLock(redis, j.id);
  for (const s of path) {
    const r = await store.transition(j.id, s as never, { token });
    if (!r.ok) throw new Error(`drive ${j.id} → ${s}: ${r.reason}`);
  }
  return token;
}

/** P21 on either backend: a create whose claim names another job writes nothing; once it names the job, it creates. */
export async function expectClaimGuard(store: JobStore, redis: RedisClient): Promise<void> {
  const j = newJob({ tenant: 'claims' });
  const claim = jobKeys.idempotency('claims', `k-${j.id}`);
  await redis.set(claim, 'someone-else');
  await expect(store.createJob(j, { claim })).rejects.toMatchObject({ code: 'claim_lost' });
  expect(await redis.exists(jobKeys.meta(j.id))).toBe(0);
  expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).toBeNull();
  await redis.set(claim, j.id);
  expect((await store.createJob(j, { claim })).state).toBe('PENDING');
  expect(await redis.zscore(jobKeys.active('PENDING'), j.id)).not.toBeNull();
}

/**
 * A job store (and its client) on a Redis of `kind` of its own for the enclosing describe block:
 * started in its beforeAll, closed in its afterAll. Read the fields inside tests.
 */
export function storeOnBackend(kind: RedisBackendKind, jobTtlMs: number): { server: RedisBackend; redis: RedisClient; store: JobStore } {
  const env = {} as { server: RedisBackend; redis: RedisClient; store: JobStore };
  beforeAll(async () => {
    env.server = await startRedisBackend(kind);
    env.redis = createRedis({ url: env.server.url, clusterAddresses: env.server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
    env.store = createJobStore(env.redis, { jobTtlMs });
  }, 90_000); // a 6-node cluster takes a few seconds to form
  afterAll(async () => {
    await closeRedis(env.redis);
    await env.server.stop();
  });
  return env;
}
