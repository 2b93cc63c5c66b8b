// P335 (as P165 for idempotency claims): a DLQ retry's claim (SET NX) whose reply was lost may still
// have run in Redis, naming a job the request never creates. Every retry of the entry then waited
// 5 s and got 409 dlq_retry_in_progress with a job id that never exists, until the claim went stale
// (30 s). The failed claim is now released right after it, on the same connection.
import { createJobStore, jobKeys } from '@cordum/job-store';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { createDlqRetrier } from '../src/dlq/retry';
import type { SubmitService } from '../src/submit/service';

const quiet = createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined });
const DLQ_TTL_MS = 30 * 24 * 3600_000;
let server: TestServer;
let redis: RedisClient;

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

it('a claim whose reply was lost is released: the next retry of the entry goes ahead at once', async () => {
  const id = 'dead-claim-lost';
  await redis.set(jobKeys.dlqEntry(id), JSON.stringify({ job_id: id, tenant: 'acme', topic: 'job.echo', reason: 'x', reason_code: 'worker_error', last_state: 'FAILED', attempts: 3, created_at: new Date().toISOString() }));
  const store = createJobStore(redis, { jobTtlMs: 60_000 });
  let submits = 0;
  const submit = { submit: () => { submits += 1; return Promise.reject(new Error('not reached: the source job has no record')); } } as unknown as SubmitService;
  // The claim runs in Redis and its reply is lost (a socket dropped with it in flight, P150).
  const lossy = new Proxy(redis, {
    get(target, prop, receiver) {
      if (prop === 'set') {
        return async (...args: unknown[]) => {
          const out: unknown = await (target.set as (...a: unknown[]) => Promise<unknown>)(...args);
          if (String(args[0]).startsWith('dlq:retry:')) throw new Error('connection lost with the command in flight: it may or may not have run');
          return out;
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  }) as RedisClient;
  await expect(createDlqRetrier({ redis: lossy, store, submit, logger: quiet, dlqTtlMs: DLQ_TTL_MS }).retry('acme', id, 'alice')).rejects.toThrow(/in flight/);
  // Before: the claim stayed, naming a job that never exists.
  await waitFor(async () => (await redis.exists(jobKeys.dlqRetry(id))) === 0, 5_000, { message: 'the lost claim released' });
  // Before: 409-style in_progress after a 5 s wait; now the retry goes ahead (here to the missing source record).
  const again = await createDlqRetrier({ redis, store, submit, logger: quiet, dlqTtlMs: DLQ_TTL_MS }).retry('acme', id, 'alice');
  expect(again.kind).toBe('source_expired');
  expect(submits).toBe(0);
});
