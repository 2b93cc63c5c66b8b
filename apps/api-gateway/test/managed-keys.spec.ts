// Managed API keys (D27) across two gateway replicas: created once, hashed at
// rest, revoked or expired → 401 on every replica within 1 s.
import { createHash, randomBytes, scryptSync } from 'node:crypto';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { createFailedLoginBudget, FAILED_LOGIN_ADDRESS_BURST, FAILED_LOGIN_BURST, FAILED_LOGIN_PER_MINUTE } from '../src/auth/failed-logins';
import { RECORD_CACHE_MS, createManagedKeys } from '../src/auth/managed';
import { KEYS, answersFrom, call, expectEnvelope, metric, statusEverywhere, type CallResult } from './harness';
import { startReplicas, type Replicas } from './replicas';

let r: Replicas;
let redis: RedisClient;

beforeAll(async () => {
  r = await startReplicas(2);
  redis = createRedis({ url: r.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await r.stop();
});

const job = { prompt: 'hi', topic: 'job.echo' };

async function createKey(body: Record<string, unknown>) {
  const res = await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body });
  expect(res.status).toBe(201);
  return res.body as { id: string; key: string; tenant: string; role: string; expires_at: string | null };
}

it('creates a key shown once, stored only as the SHA-256 of its secret (D27), usable on both replicas', async () => {
  const k = await createKey({ role: 'operator', principal_id: 'ci-bot', name: 'ci' });
  expect(k.key).toMatch(/^ck_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  expect(k.key.startsWith(`ck_${k.id}_`)).toBe(true);
  expect(k).toMatchObject({ tenant: 'acme', role: 'operator', principal_id: 'ci-bot', revoked: false, expires_at: null });

  const stored = await redis.hgetall(`apikey:{${k.id}}`);
  const secret = k.key.slice(`ck_${k.id}_`.length);
  expect(stored['tenant']).toBe('acme');
  // P331: D27's SHA-256 (hex); it was a salted scrypt hash.
  expect(stored['kdf']).toBe('sha256');
  expect(stored['hash']).toBe(createHash('sha256').update(secret).digest('hex'));
  expect(stored['salt']).toBeUndefined();
  expect(Object.values(stored).some((v) => v.includes(secret))).toBe(false);

  for (const url of r.urls) {
    const sub = await call(url, 'POST', '/api/v1/jobs', { key: k.key, body: job });
    expect(sub.status).toBe(200);
    // Bound to its tenant like a static key.
    expectEnvelope(await call(url, 'GET', '/api/v1/jobs/x', { key: k.key, tenant: 'globex' }), 403, 'tenant_mismatch');
  }
  // Role from the one table: an operator key cannot manage keys.
  expectEnvelope(await call(r.urls[1]!, 'GET', '/api/v1/auth/keys', { key: k.key }), 403, 'forbidden');

  const list = await call(r.urls[1]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin });
  expect(list.status).toBe(200);
  const items = list.body['items'] as Record<string, unknown>[];
  expect(items.map((i) => i['id'])).toContain(k.id);
  expect(JSON.stringify(items)).not.toContain(secret);
  expect(JSON.stringify(items)).not.toContain(stored['hash']!);
});

// P331: keys minted before (salted scrypt) keep working, and a record written by other tooling in
// D27's own form (the secret's SHA-256, no kdf, no salt) works too; a record it cannot read fails closed.
it('verifies a pre-P331 scrypt record and a D27-form record written by hand; refuses an unknown kdf', async () => {
  const put = async (id: string, fields: Record<string, string>): Promise<string> => {
    const secret = randomBytes(32).toString('base64url');
    const f = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, v.replace('$SHA', createHash('sha256').update(secret).digest('hex'))]));
    if (f['kdf']?.startsWith('scrypt:')) {
      const salt = randomBytes(16);
      f['salt'] = salt.toString('base64');
      f['hash'] = scryptSync(secret, salt, 32, { N: 16384, r: 8, p: 1 }).toString('base64');
    }
    await redis.hset(`apikey:{${id}}`, { id, tenant: 'acme', role: 'operator', created_at: String(Date.now()), revoked: '0', ...f });
    return `ck_${id}_${secret}`;
  };
  const legacy = await put('00000000000000a1', { kdf: 'scrypt:N=16384,r=8,p=1', hash: '' });
  const d27 = await put('00000000000000a2', { hash: '$SHA' });
  const unknown = await put('00000000000000a3', { hash: '$SHA', kdf: 'md5' });
  for (const url of r.urls) {
    expect((await call(url, 'POST', '/api/v1/jobs', { key: legacy, body: job })).status).toBe(200);
    expect((await call(url, 'POST', '/api/v1/jobs', { key: d27, body: job })).status).toBe(200);
    expectEnvelope(await call(url, 'POST', '/api/v1/jobs', { key: unknown, body: job }), 401, 'unauthenticated');
    expectEnvelope(await call(url, 'POST', '/api/v1/jobs', { key: `${d27.slice(0, -1)}${d27.endsWith('A') ? 'B' : 'A'}`, body: job }), 401, 'unauthenticated');
  }
});

it('a wrong secret for a real id, and malformed ck_ keys, are 401', async () => {
  const k = await createKey({ role: 'viewer' });
  const wrong = `ck_${k.id}_${'A'.repeat(43)}`;
  expectEnvelope(await call(r.urls[0]!, 'GET', '/api/v1/jobs/x', { key: wrong }), 401, 'unauthenticated');
  expectEnvelope(await call(r.urls[0]!, 'GET', '/api/v1/jobs/x', { key: 'ck_zz_short' }), 401, 'unauthenticated');
  expectEnvelope(await call(r.urls[0]!, 'GET', '/api/v1/jobs/x', { key: k.key }), 404, 'job_not_found');
});

it('revocation gives 401 on every replica within 1 s', async () => {
  const k = await createKey({ role: 'viewer' });
  // Both replicas have the record cached before the revocation.
  for (const url of r.urls) expect((await call(url, 'GET', '/api/v1/jobs/x', { key: k.key })).status).toBe(404);
  const del = await call(r.urls[0]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin });
  expect(del.status).toBe(200);
  expect(del.body).toMatchObject({ id: k.id, revoked: true });
  const revokedAt = Date.now();
  // The revoking replica: at once.
  expectEnvelope(await call(r.urls[0]!, 'GET', '/api/v1/jobs/x', { key: k.key }), 401, 'unauthenticated');
  // The other replica: once its cached record is older than RECORD_CACHE_MS (the 1 s promise).
  const replica2 = async () => [(await call(r.urls[1]!, 'GET', '/api/v1/jobs/x', { key: k.key })).status];
  const late = await answersFrom(replica2, revokedAt + RECORD_CACHE_MS, 'replica 2 rejects the revoked key');
  expect(late.filter((c) => c !== 401)).toEqual([]);
  expect(RECORD_CACHE_MS).toBeLessThan(1_000);
  // Stays listed as revoked; a second delete is harmless.
  const list = await call(r.urls[1]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin });
  expect((list.body['items'] as Record<string, unknown>[]).find((i) => i['id'] === k.id)).toMatchObject({ revoked: true });
  expect((await call(r.urls[1]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin })).status).toBe(200);
});

it('an expired key is 401 on every replica within 1 s of its expiry', async () => {
  const k = await createKey({ role: 'viewer', ttl_seconds: 1 });
  const expiresAt = Date.parse(k.expires_at!);
  for (const url of r.urls) expect((await call(url, 'GET', '/api/v1/jobs/x', { key: k.key })).status).toBe(404);
  // Expiry is checked on every call: a request sent after it is refused on every replica.
  const late = await answersFrom(() => statusEverywhere(r.urls, k.key), expiresAt, 'expired key rejected everywhere');
  expect(late.length).toBeGreaterThan(0);
  expect(late.filter((c) => c !== 401)).toEqual([]);
});

it('keys are per tenant: other tenants cannot see or revoke them; bad input is 400', async () => {
  const k = await createKey({ role: 'viewer' });
  // A `*` operator key is not admin; the globex operator neither.
  expectEnvelope(await call(r.urls[0]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.globex }), 403, 'forbidden');
  expectEnvelope(await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'admin', tenant_id: 'globex' } }), 403, 'tenant_mismatch');
  expectEnvelope(await call(r.urls[0]!, 'DELETE', '/api/v1/auth/keys/0000000000000000', { key: KEYS.admin }), 404, 'key_not_found');
  expectEnvelope(await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'root' } }), 400, 'validation_failed');
  expectEnvelope(await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'viewer', expires_at: '2001-01-01T00:00:00Z' } }), 400, 'validation_failed');
  // A misspelt lifetime is refused, not dropped (a key that never expires).
  const before = (await call(r.urls[0]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin })).body['items'] as unknown[];
  const typo = await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body: { role: 'viewer', ttl_second: 60 } });
  expectEnvelope(typo, 400, 'validation_failed');
  expect(JSON.stringify(typo.body['details'])).toContain('ttl_second');
  expect((await call(r.urls[0]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin })).body['items']).toHaveLength(before.length);
  // A lone surrogate would be stored as U+FFFD, not as the 201 echoed it.
  for (const body of [{ role: 'viewer', name: 'a\ud800' }, { role: 'viewer', principal_id: '\udfff' }]) {
    const bad = await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body });
    expectEnvelope(bad, 400, 'validation_failed');
    expect(JSON.stringify(bad.body['details'])).toContain('lone surrogate');
  }
  // P329: the principal reaches workers, approvals and audits; a newline could forge a log line.
  for (const body of [{ role: 'viewer', principal_id: 'x\n{"level":"error"}' }, { role: 'viewer', name: 'ops\r\nkey' }]) {
    const bad = await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body });
    expectEnvelope(bad, 400, 'validation_failed');
    expect(JSON.stringify(bad.body['details'])).toContain('control characters');
  }
  expect((await call(r.urls[0]!, 'GET', '/api/v1/auth/keys', { key: KEYS.admin })).body['items']).toHaveLength(before.length);
  expectEnvelope(await call(r.urls[0]!, 'POST', '/api/v1/auth/keys', { key: KEYS.viewer, body: { role: 'viewer' } }), 403, 'forbidden');
});

it('a new key drops from its tenant\'s index the ids whose record Redis deleted, without anyone listing (P252)', async () => {
  const old = [await createKey({ role: 'viewer' }), await createKey({ role: 'viewer' })];
  const index = `apikey:index:${old[0]!.tenant}`;
  for (const k of old) expect(await redis.sismember(index, k.id)).toBe(1);
  // 30 days after they stopped working: Redis deleted their records.
  for (const k of old) await redis.del(`apikey:{${k.id}}`);
  const fresh = await createKey({ role: 'viewer' });
  for (const k of old) expect(await redis.sismember(index, k.id)).toBe(0);
  expect(await redis.sismember(index, fresh.id)).toBe(1);
  // A bounded share per create (100 sampled members), however large the index; repeated creates clear them all.
  const dead = Array.from({ length: 250 }, (_, i) => `dead${String(i).padStart(12, '0')}`);
  await redis.sadd(index, ...dead);
  const alive = (await redis.scard(index)) - dead.length + 1; // with the key about to be created
  await createKey({ role: 'viewer' });
  const removed = dead.length + alive - (await redis.scard(index));
  expect(removed).toBeGreaterThanOrEqual(100 - alive);
  expect(removed).toBeLessThanOrEqual(100);
  for (let i = 0; i < 5 && (await redis.smismember(index, ...dead)).includes(1); i++) await createKey({ role: 'viewer' });
  expect(await redis.smismember(index, ...dead)).not.toContain(1);
});

// Last in this file: it spends replica 2's failed-check budget for 127.0.0.1.
it('wrong secrets for a known id are refused 429 once the client has failed 20 checks for it, before the check; other logins are not, from the same address too (P55, P222)', async () => {
  const k = await createKey({ role: 'operator', principal_id: 'budget-bot' });
  const gw = r.urls[1]!;
  // verified once (cached): later uses need no scrypt
  expect((await call(gw, 'POST', '/api/v1/jobs', { key: k.key, body: job })).status).toBe(200);
  const wrong = (i: number) => `ck_${k.id}_${String(i).padStart(43, 'x')}`;
  // The budget refills a token every 3 s (FAILED_LOGIN_PER_MINUTE): on a busy machine 20 scrypt
  // checks can take that long, so the 401s before the first 429 are at least the burst and at most
  // the burst plus what the elapsed time refilled (not 'exactly 20': that failed under load).
  const started = Date.now();
  let unauthenticated = 0;
  let refused: CallResult | undefined;
  for (let i = 0; i < 60 && !refused; i++) {
    const res = await call(gw, 'GET', '/api/v1/jobs', { key: wrong(i) });
    if (res.status === 401) {
      expectEnvelope(res, 401, 'unauthenticated');
      unauthenticated++;
    } else refused = res;
  }
  const refilled = Math.ceil(((Date.now() - started) * FAILED_LOGIN_PER_MINUTE) / 60_000);
  if (!refused) throw new Error('60 wrong secrets, none refused');
  expectEnvelope(refused, 429, 'rate_limited');
  // P296: counted apart from the limiter's hits (which stay as they were: no tenant was limited)
  expect(await metric(gw, 'cordum_auth_failed_login_throttled_total', 'scope="key"')).toBe(1);
  expect(await metric(gw, 'cordum_auth_failed_login_throttled_total', 'scope="address"')).toBe(0);
  expect(unauthenticated).toBeGreaterThanOrEqual(FAILED_LOGIN_BURST);
  expect(unauthenticated).toBeLessThanOrEqual(FAILED_LOGIN_BURST + refilled);
  expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  // P222: another key's first check (scrypt) from the same address still runs: behind an ingress
  // every client has this address, and one id's wrong secrets locked all of their first logins out
  const fresh = await createKey({ role: 'viewer' });
  expect((await call(gw, 'GET', '/api/v1/jobs', { key: fresh.key })).status).toBe(200);
  // what needs no scrypt still works: the verified key, static keys, and other replicas
  expect((await call(gw, 'GET', '/api/v1/jobs', { key: k.key })).status).toBe(200);
  expect((await call(gw, 'GET', '/api/v1/jobs', { key: KEYS.viewer })).status).toBe(200);
  expect((await call(r.urls[0]!, 'GET', '/api/v1/jobs', { key: fresh.key })).status).toBe(200);
});

it('an address has a larger budget for all key ids together, and an IPv6 client is counted by its /64 (P222)', async () => {
  // The production ratio (20 per id, 100 per address) at a tenth of the size: each wrong secret costs a scrypt.
  const t = Date.now();
  const perId = 2;
  const perAddress = 10;
  expect(FAILED_LOGIN_ADDRESS_BURST / FAILED_LOGIN_BURST).toBe(perAddress / perId);
  const keys = createManagedKeys(redis, { failedLogins: createFailedLoginBudget({ now: () => t, burst: perId }), addressFailedLogins: createFailedLoginBudget({ now: () => t, burst: perAddress }) });
  const ids: string[] = [];
  for (let i = 0; i < perAddress / perId + 1; i++) ids.push(/^ck_([0-9a-f]{16})_/.exec((await keys.create({ tenant: 'acme', role: 'viewer' })).key)![1]!);
  const wrong = (id: string, i: number) => `ck_${id}_${String(i).padStart(43, 'v')}`;
  const outcome = (p: Promise<unknown>) => p.then((v) => (v === null ? 'wrong' : 'ok'), (err: { code?: string }) => err.code ?? 'error');
  // Five ids × 2 wrong secrets from addresses of one /64 use up the address's 10; one id's own 2 are spent too.
  for (const [n, id] of ids.slice(0, -1).entries()) {
    for (let i = 0; i < perId; i++) expect(await outcome(keys.lookup(wrong(id, i), `2001:db8::${n}:${i}`))).toBe('wrong');
  }
  expect(await outcome(keys.lookup(wrong(ids[0]!, 9), '10.1.1.1'))).toBe('wrong'); // that id from elsewhere: its own budget there
  expect(await outcome(keys.lookup(wrong(ids.at(-1)!, 0), '2001:db8::ffff'))).toBe('rate_limited');
  // Another /64, and IPv4, have their own.
  expect(await outcome(keys.lookup(wrong(ids.at(-1)!, 1), '2001:db8:0:1::1'))).toBe('wrong');
  expect(await outcome(keys.lookup(wrong(ids.at(-1)!, 2), '10.9.9.9'))).toBe('wrong');
});

it('wrong secrets sent at once run at most the budget of checks; parallel first checks of one secret share one check and its token (P155)', async () => {
  const t = Date.now();
  const keys = createManagedKeys(redis, { failedLogins: createFailedLoginBudget({ now: () => t }) });
  const { key } = await keys.create({ tenant: 'acme', role: 'viewer' });
  const id = /^ck_([0-9a-f]{16})_/.exec(key)![1]!;
  const wrong = (i: number) => `ck_${id}_${String(i).padStart(43, 'w')}`;
  const outcome = (p: Promise<unknown>) =>
    p.then(
      (v) => (v === null ? 'wrong' : 'ok'),
      (err: { code?: string }) => err.code ?? 'error',
    );

  // 60 wrong secrets at once from one address: only its 20 tokens' worth run scrypt
  const burst = await Promise.all(Array.from({ length: 60 }, (_, i) => outcome(keys.lookup(wrong(i), '10.9.0.1'))));
  expect(burst.filter((o) => o === 'wrong')).toHaveLength(FAILED_LOGIN_BURST);
  expect(burst.filter((o) => o === 'rate_limited')).toHaveLength(60 - FAILED_LOGIN_BURST);

  // one token left: ten parallel first uses of a valid key share one check and all pass
  for (let i = 0; i < FAILED_LOGIN_BURST - 1; i++) expect(await outcome(keys.lookup(wrong(100 + i), '10.9.0.2'))).toBe('wrong');
  const fresh = await keys.create({ tenant: 'acme', role: 'viewer' });
  const together = await Promise.all(Array.from({ length: 10 }, () => outcome(keys.lookup(fresh.key, '10.9.0.2'))));
  expect(together).toEqual(Array.from({ length: 10 }, () => 'ok'));
  // the passed check gave its token back: one more wrong secret runs, the next is refused
  expect(await outcome(keys.lookup(wrong(200), '10.9.0.2'))).toBe('wrong');
  expect(await outcome(keys.lookup(wrong(201), '10.9.0.2'))).toBe('rate_limited');
});
