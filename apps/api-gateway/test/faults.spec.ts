// BEHAVIOURS §8 at the gateway: NATS down at publish → D11; Redis down →
// fast 503s (never 500, never a hang) and /readyz 503.
import { connectBus, subjects } from '@cordum/bus';
import { CANCEL_OWED_AFTER_MS, jobKeys } from '@cordum/job-store';
import { decodePacket } from '@cordum/protocol';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { waitFor, type TestServer } from '@cordum/testing';
import { KEYS, call, cancelsDrained, expectEnvelope, startRig, type Rig } from './harness';
import { readySchema } from '../src/http/api-schemas';

let rig: Rig;
let redis: RedisClient;
let revivedStop: () => Promise<void> = async () => undefined;
/** NATS as last restarted by a test (the rig's own server once stopped). */
let natsNow: TestServer | undefined;

beforeAll(async () => {
  rig = await startRig();
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'faults-spec' });
});

afterAll(async () => {
  await closeRedis(redis);
  await rig.stop();
  await revivedStop();
});

const submit = (body: Record<string, unknown>) => call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body });

it('NATS down: submit answers 503 bus_unavailable, the job ends FAILED(bus_unavailable) and the idempotency claim is freed (D11)', async () => {
  // Stop the process but keep its store, like a NATS restart with persistent storage.
  await rig.nats.process.stop(5_000);
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 503, 10_000, { message: 'readyz 503 without NATS' });
  const r = await submit({ prompt: 'x', topic: 'job.echo', idempotency_key: 'nats-down-1' });
  expectEnvelope(r, 503, 'bus_unavailable');
  const jobId = String(r.body['job_id']);
  const g = await call(rig.url, 'GET', `/api/v1/jobs/${jobId}`, { key: KEYS.operator });
  expect(g.body['state']).toBe('FAILED');
  expect(g.body['error']).toEqual({ code: 'bus_unavailable', message: expect.any(String) });
  expect(await redis.exists('job:idempotency:acme:nats-down-1')).toBe(0);
  const ready = await call(rig.url, 'GET', '/readyz');
  expect(ready.body).toEqual({ ready: false, checks: { serving: true, redis: true, nats: false, jetstream: false, config: true } });

  // NATS back on the same port: the gateway recovers without a restart.
  const revived = await rig.nats.restart();
  natsNow = revived;
  revivedStop = () => revived.stop();
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 15_000, { message: 'readyz 200 after NATS returns' });
  const after = await submit({ prompt: 'x', topic: 'job.echo', idempotency_key: 'nats-down-1' });
  expect(after.status).toBe(200);
  expect(after.body['job_id']).not.toBe(jobId);
});

it('a cancel whose JobCancel could not be published is sent again by a repeated cancel, which answers 409 (P52)', async () => {
  const nats = natsNow as TestServer;
  const r = await submit({ prompt: 'x', topic: 'job.echo' });
  expect(r.status).toBe(200);
  const id = String(r.body['job_id']);
  await nats.process.stop(5_000);
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 503, 10_000, { message: 'readyz 503 without NATS' });
  // the state is committed; only the worker's stop is late
  const cancelledAt = Date.now();
  expect(await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator, body: { reason: 'stop it' } })).toMatchObject({ status: 200, body: { id, state: 'CANCELLED' } });
  // ... and owed (P134): filed before the write, left by the failed publish for the schedulers (none run here).
  const owed = Number(await redis.zscore(jobKeys.cancelOutbox(), id));
  expect(owed).toBeGreaterThanOrEqual(cancelledAt + CANCEL_OWED_AFTER_MS);
  expect(owed).toBeLessThanOrEqual(Date.now() + CANCEL_OWED_AFTER_MS);

  const back = await nats.restart();
  natsNow = back;
  revivedStop = () => back.stop();
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 15_000, { message: 'readyz 200 after NATS returns' });
  const bus = await connectBus({ servers: [back.url], name: 'faults-cancel', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
  try {
    const told: { jobId: string; reason: string }[] = [];
    bus.subscribe(subjects.cancel, (data) => {
      const p = decodePacket(data);
      if (p.payload.case === 'jobCancel') told.push({ jobId: p.payload.value.jobId, reason: p.payload.value.reason });
    });
    await bus.flush();
    const again = await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator });
    expectEnvelope(again, 409, 'job_terminal');
    expect(again.body['state']).toBe('CANCELLED');
    await cancelsDrained(bus, told);
    expect(told.filter((t) => t.jobId === id)).toEqual([{ jobId: id, reason: 'stop it' }]);
  } finally {
    await bus.close();
  }
});

it('Redis down: POST answers 503 redis_unavailable quickly, GET too, and /readyz is 503', async () => {
  await rig.redis.stop();
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 503 && (await call(rig.url, 'GET', '/readyz')).body['checks'] !== undefined, 10_000);
  const r = await submit({ prompt: 'x', topic: 'job.echo' });
  expectEnvelope(r, 503, 'redis_unavailable');
  expect(r.ms).toBeLessThan(3_000);
  const withKey = await submit({ prompt: 'x', topic: 'job.echo', idempotency_key: 'redis-down' });
  expectEnvelope(withKey, 503, 'redis_unavailable');
  const g = await call(rig.url, 'GET', '/api/v1/jobs/00000000-0000-4000-8000-000000000000', { key: KEYS.operator });
  expectEnvelope(g, 503, 'redis_unavailable');
  expect(g.ms).toBeLessThan(3_000);
  const ready = await call(rig.url, 'GET', '/readyz');
  expect(ready.status).toBe(503);
  expect((ready.body['checks'] as Record<string, boolean>)['redis']).toBe(false);
  // the body the OpenAPI document gives /readyz's 503 (the readiness body, not the error envelope)
  expect(readySchema.safeParse(ready.body).success).toBe(true);
  // Bad input is still a 4xx, whatever the dependencies do.
  expectEnvelope(await submit({ prompt: 'x', topic: 'nope' }), 400, 'validation_failed');
  // a cursor that is not one of ours, on every list (P297: /approvals and /dlq answered 503)
  for (const list of ['/api/v1/jobs', '/api/v1/approvals', '/api/v1/dlq']) {
    expectEnvelope(await call(rig.url, 'GET', `${list}?cursor=not-a-cursor`, { key: KEYS.operator }), 400, 'validation_failed');
  }
});
