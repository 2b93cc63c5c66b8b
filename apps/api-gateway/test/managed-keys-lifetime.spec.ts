// Managed API key records are not kept forever (D27): Redis deletes a record
// 30 days (RETAIN_MS) after its key stops working (expiry or revocation); until
// then it is listed as expired / revoked. A record that is gone is an unknown
// key on every replica and for open streams, and list() trims the tenant index.
import WebSocket from 'ws';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { RECORD_CACHE_MS } from '../src/auth/managed';
import { CLOSE_KEY_INVALID } from '../src/stream/ws';
import { KEYS, answersFrom, call, expectEnvelope, statusEverywhere as statusOn } from './harness';
import { startReplicas, type Replicas } from './replicas';

const DAY_MS = 24 * 3600 * 1000;
/** How long a dead key's record is kept (managed.ts RETAIN_MS). */
const RETAIN_MS = 30 * DAY_MS;
/** Slack for the time between the gateway's clock read and ours. */
const SLACK_MS = 60_000;

let r: Replicas;
let redis: RedisClient;
const sockets: WebSocket[] = [];

beforeAll(async () => {
  r = await startReplicas(2);
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  for (const s of sockets) s.terminate();
  await closeRedis(redis);
  await r.stop();
});

interface Key {
  id: string;
  key: string;
  expires_at: string | null;
  created_at: string;
}

async function createKey(body: Record<string, unknown>): Promise<Key> {
  const res = await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body });
  expect(res.status).toBe(201);
  return res.body as unknown as Key;
}

async function listed(): Promise<Record<string, unknown>[]> {
  const res = await call(r.urls[1]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin });
  expect(res.status).toBe(200);
  return res.body['items'] as Record<string, unknown>[];
}

const record = (id: string) => `apikey:{${id}}`;
const INDEX = 'apikey:index:acme';
const statusEverywhere = (key: string): Promise<number[]> => statusOn(r.urls, key);

it('a key created with ttl_seconds or expires_at has a record Redis deletes 30 days after its expiry; one without lives on', async () => {
  const ttl = await createKey({ role: 'viewer', ttl_seconds: 3600 });
  // P217: exactly ttl_seconds after created_at (it was counted before the key's hash, ~60 ms early)
  expect(Date.parse(ttl.expires_at!) - Date.parse(ttl.created_at)).toBe(3600_000);
  const pttl = await redis.pttl(record(ttl.id));
  expect(pttl).toBeLessThanOrEqual(3600_000 + RETAIN_MS);
  expect(pttl).toBeGreaterThan(3600_000 + RETAIN_MS - SLACK_MS);
  expect(await redis.pexpiretime(record(ttl.id))).toBe(Date.parse(ttl.expires_at!) + RETAIN_MS);

  const at = new Date(Date.now() + 7 * DAY_MS).toISOString();
  const dated = await createKey({ role: 'viewer', expires_at: at });
  expect(await redis.pexpiretime(record(dated.id))).toBe(Date.parse(at) + RETAIN_MS);

  const forever = await createKey({ role: 'viewer' });
  expect(await redis.pttl(record(forever.id))).toBe(-1);

  // Expired, it is refused at once but still listed (with its expires_at) during the 30 days.
  const short = await createKey({ role: 'viewer', ttl_seconds: 1 });
  const afterExpiry = await answersFrom(() => statusEverywhere(short.key), Date.parse(short.expires_at!), 'expired key refused');
  expect(afterExpiry.filter((c) => c !== 401)).toEqual([]);
  expect(await redis.pexpiretime(record(short.id))).toBe(Date.parse(short.expires_at!) + RETAIN_MS);
  expect((await listed()).find((i) => i['id'] === short.id)).toMatchObject({ expires_at: short.expires_at, revoked: false });
});

it('a revoked key has a record deleted at most 30 days later, is refused meanwhile, and a repeated DELETE does not extend it', async () => {
  const k = await createKey({ role: 'viewer' });
  const long = await createKey({ role: 'viewer', ttl_seconds: 365 * 24 * 3600 });
  for (const key of [k, long]) {
    expect(await statusEverywhere(key.key)).toEqual([404, 404]); // cached on both replicas
    const before = Date.now();
    expect((await call(r.urls[0]!, 'DELETE', `/api/v1/auth/keys/${key.id}`, { key: KEYS.admin })).status).toBe(200);
    const revokedAt = Date.now();
    const pttl = await redis.pttl(record(key.id));
    expect(pttl).toBeLessThanOrEqual(RETAIN_MS);
    expect(pttl).toBeGreaterThan(RETAIN_MS - SLACK_MS);
    const deleteAt = await redis.pexpiretime(record(key.id));
    expect(deleteAt).toBeGreaterThanOrEqual(before + RETAIN_MS);
    const afterRevoke = await answersFrom(() => statusEverywhere(key.key), revokedAt + RECORD_CACHE_MS, 'revoked key refused everywhere');
    expect(afterRevoke.filter((c) => c !== 401)).toEqual([]);
    expect((await listed()).find((i) => i['id'] === key.id)).toMatchObject({ revoked: true });
    // A second DELETE keeps the deadline.
    expect((await call(r.urls[1]!, 'DELETE', `/api/v1/auth/keys/${key.id}`, { key: KEYS.admin })).status).toBe(200);
    expect(await redis.pexpiretime(record(key.id))).toBe(deleteAt);
  }
});

it('a key whose record is gone is refused everywhere, its stream is closed with 4401, and the next list drops it from the index', async () => {
  const k = await createKey({ role: 'viewer', ttl_seconds: 3600 });
  const keep = await createKey({ role: 'viewer' });
  expect(await statusEverywhere(k.key)).toEqual([404, 404]); // cached and verified on both replicas
  const ws = new WebSocket(r.urls[1]!.replace('http://', 'ws://') + '/api/v1/stream', [], { headers: { 'X-API-Key': k.key } });
  sockets.push(ws);
  let closed: { code: number; reason: string } | null = null;
  ws.on('close', (code, reason) => (closed = { code, reason: reason.toString() }));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });

  const cardBefore = await redis.scard(INDEX);
  expect(await redis.sismember(INDEX, k.id)).toBe(1);
  // What Redis does at the record's deadline.
  expect(await redis.del(record(k.id))).toBe(1);
  const goneAt = Date.now();
  const late = await answersFrom(() => statusEverywhere(k.key), goneAt + RECORD_CACHE_MS, 'gone key refused everywhere');
  expect(late.filter((c) => c !== 401)).toEqual([]);
  expectEnvelope(await call(r.urls[0]!, 'GET', '/api/v1/jobs/x', { key: k.key }), 401, 'unauthenticated');
  await waitFor(() => closed !== null, 5_000, { message: 'stream of the gone key closed' });
  expect(closed).toMatchObject({ code: CLOSE_KEY_INVALID, reason: expect.stringMatching(/^unauthenticated:/) as unknown });
  // Revoking it is now "no such key".
  expectEnvelope(await call(r.urls[0]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin }), 404, 'key_not_found');
  expect(await redis.exists(record(k.id))).toBe(0);

  const ids = (await listed()).map((i) => i['id']);
  expect(ids).not.toContain(k.id);
  expect(ids).toContain(keep.id);
  expect(await redis.sismember(INDEX, k.id)).toBe(0);
  expect(await redis.scard(INDEX)).toBe(cardBefore - 1);
  expect(await redis.sismember(INDEX, keep.id)).toBe(1);
});
