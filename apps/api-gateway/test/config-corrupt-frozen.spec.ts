// The config routes against two faults a review reproduced:
// - a stored `rate_limits.burst: 1e999` (valid JSON, read as Infinity; a hand edit with redis-cli
//   SET): GET /config/status threw and answered 503 redis_unavailable, and the gateway's own
//   config watcher rejected at every poll (unhandled: the process exits 1 under service-kit);
// - NATS frozen (SIGSTOP): a committed PUT answered only when nats.js called the connection
//   stale (20-30 s), as it awaited the notification's flush without a deadline.
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { CONFIG_NOTIFY_FLUSH_BUDGET_MS, CORRUPT_SECTION_PREFIX, createConfigStore, sectionHash } from '@cordum/config-overlay';
import * as S from '../src/http/api-schemas';
import { KEYS, call, expectEnvelope, startRig, type Rig } from './harness';

let rig: Rig;
let redis: RedisClient;
let frozen = false;
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  rig = await startRig({ CORDUM_CONFIG_RELOAD_INTERVAL: '200ms' });
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0, name: 'config-corrupt-spec' });
});

afterAll(async () => {
  if (frozen) rig.nats.process.kill('SIGCONT');
  await closeRedis(redis);
  await rig.stop();
  process.off('unhandledRejection', onUnhandled);
});

const status = async () => {
  const r = await call(rig.url, 'GET', '/api/v1/config/status', { key: KEYS.admin });
  expect(r.status).toBe(200);
  return S.configStatusSchema.parse(r.body);
};

it('a stored section holding 1e999: /config/status answers 200 with the section marked and the gateway DRIFTED; the gateway keeps running; a PUT fixes it', async () => {
  const put = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { rate_limits: { rps: 500, burst: 900 } } });
  expect(put.status).toBe(204);
  const good = sectionHash({ rate_limits: { rps: 500, burst: 900 } }, 'rate_limits');
  await waitFor(async () => (await status()).replicas.find((r) => r.instance_id === 'gw-test')?.status === 'IN_SYNC', 5_000, { message: 'gateway IN_SYNC' });

  // The hand edit (redis-cli SET of an edited copy).
  const raw = (await redis.get('cfg:system:default'))!;
  const bad = raw.replace(/"burst":\s*900/, '"burst":1e999');
  expect(bad).not.toBe(raw);
  await redis.set('cfg:system:default', bad);

  const st = await waitFor(async () => {
    const s = await status();
    return s.replicas.find((r) => r.instance_id === 'gw-test')?.status === 'DRIFTED' ? s : null;
  }, 5_000, { message: 'gateway DRIFTED' });
  expect(st.document.hashes['rate_limits']).toMatch(new RegExp(`^${CORRUPT_SECTION_PREFIX}stored section rate_limits is unreadable: rate_limits\\.burst is Infinity`));
  expect(st.replicas.find((r) => r.instance_id === 'gw-test')?.hashes).toEqual({ rate_limits: good });
  // Several polls later (200 ms each) the gateway still serves and is still ready.
  await new Promise((r) => setTimeout(r, 1_000));
  expect((await call(rig.url, 'GET', '/readyz')).status).toBe(200);
  expect(unhandled).toEqual([]);

  // A patch of another section is refused naming the bad field (it would carry Infinity on).
  const other = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { scheduler: { input_fail_mode: 'closed' } } });
  expectEnvelope(other, 400, 'validation_failed');
  expect(JSON.stringify(other.body['details'])).toContain('data.rate_limits.burst');
  // The fix.
  expect((await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { rate_limits: { burst: 800 } } })).status).toBe(204);
  await waitFor(async () => (await status()).replicas.find((r) => r.instance_id === 'gw-test')?.status === 'IN_SYNC', 5_000, { message: 'IN_SYNC after the fix' });
  expect(unhandled).toEqual([]);
});

it('with NATS frozen a PUT answers as soon as it is committed, within the notification budget, and the change is stored', async () => {
  const store = createConfigStore(redis);
  const before = (await store.get('system', 'default')).revision;
  frozen = true;
  await rig.nats.process.freeze();
  try {
    const put = await call(rig.url, 'PUT', '/api/v1/config', { key: KEYS.admin, body: { rate_limits: { rps: 321 } } });
    expect(put.status).toBe(204);
    expect(put.headers.get('etag')).toBe(`"${before + 1}"`);
    // Was 20-30 s (until nats.js called the connection stale).
    expect(put.ms).toBeLessThan(CONFIG_NOTIFY_FLUSH_BUDGET_MS + 1_000);
    expect((await store.get('system', 'default')).data['rate_limits']).toMatchObject({ rps: 321 });
  } finally {
    rig.nats.process.kill('SIGCONT');
    frozen = false;
  }
}, 60_000);
