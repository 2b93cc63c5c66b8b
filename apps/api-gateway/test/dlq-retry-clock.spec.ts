// P284: a DLQ retry that finds another replica's claim waits up to RETRY_WAIT_MS for that job to
// settle (P56: not a job still publishing). Its deadline was taken on the host clock and compared
// with clusterNow() (Redis's time, P241): on a host 5 s or more behind Redis the wait was over
// before it began, and it answered `already_retried` with a job still PENDING, whose submit could
// yet fail. A real Redis; the process's clock offset set as a skewed host's sync sets it.
import { randomUUID } from 'node:crypto';
import { createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import { createLocks } from '@cordum/locks';
import { clockOffsetMs, closeRedis, clusterNow, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startRedis, type TestServer } from '@cordum/testing';
import { createDlqRetrier } from '../src/dlq/retry';
import type { SubmitService } from '../src/submit/service';
import { SUBMIT_SETTLE_MS } from '../src/submit/service';
import { failJobAsScheduler, onHostBehindRedis } from './harness';

let server: TestServer;
let redis: RedisClient;
let store: JobStore;

const job = (id: string) => ({
  id,
  tenant: 'acme',
  topic: 'job.echo',
  traceId: 't',
  priority: 'interactive' as const,
  labels: {},
  prompt: 'p',
  context: null,
  principalId: 'u',
  riskTags: [],
  requires: [],
  initialState: 'PENDING' as const,
});

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  store = createJobStore(redis, { jobTtlMs: 60_000 });
});

afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

it('a retry waiting on another replica\'s claim waits for its job to settle on a host whose clock is behind Redis\'s', () =>
  onHostBehindRedis(redis, 10_000, async () => {
    expect(clockOffsetMs()).toBeGreaterThan(9_000);
    // a dead-lettered job
    const dead = randomUUID();
    await store.createJob(job(dead));
    await failJobAsScheduler(store, createLocks(redis), dead);
    // another replica won the retry claim and has just recorded its job, PENDING, still publishing
    const winner = randomUUID();
    await redis.set(jobKeys.dlqRetry(dead), winner, 'PX', 60_000);
    const created = await store.createJob(job(winner));
    const submit = { submit: () => Promise.reject(new Error('the loser must not submit')) } as unknown as SubmitService;
    const retrier = createDlqRetrier({ redis, store, submit, logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }), dlqTtlMs: 60_000 });
    const r = await retrier.retry('acme', dead, 'u');
    // answered only once the job settled (its submit can no longer fail), not at once
    expect(r).toMatchObject({ kind: 'already_retried', job: { id: winner } });
    expect(clusterNow() - created.createdAt).toBeGreaterThanOrEqual(SUBMIT_SETTLE_MS);
  }));
