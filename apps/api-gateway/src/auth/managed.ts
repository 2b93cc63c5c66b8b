// Managed API keys (D27): `ck_<id>_<secret>`, shown once, stored under
// `apikey:{<id>}` as the SHA-256 of the secret (hex, `kdf: sha256`). The secret is
// 256 random bits, so a fast hash cannot be brute-forced from a copied Redis dump
// either (P331). Records written as a salted scrypt hash (`kdf: scrypt:…`, before
// P331) are still verified, once per key per replica thanks to the verified cache
// below. Revocation and expiry hold on every replica within 1 s: records
// are cached for at most RECORD_CACHE_MS, and expiry is checked on every call.
//
// Lifetime: a record is deleted by Redis RETAIN_MS after its key stops working
// (expiry, or revocation, whichever is first); a key with neither lives as long
// as it works. Until then it is listed with its expires_at / revoked, so admins
// and audits still see recently dead keys. A record that is gone is an unknown
// key: refused like any wrong key, and its stream closed at the next re-check
// (P77). The tenant index is in another slot, so it is not trimmed with the
// record: list() drops ids whose record is gone.
import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { clusterNow, execReplies, type RedisClient } from '@cordum/redis';
import { ApiError } from '../http/errors';
import { rateLimitError } from '../ratelimit/middleware';
import { FAILED_LOGIN_ADDRESS_BURST, FAILED_LOGIN_ADDRESS_PER_MINUTE, addressBucket, createFailedLoginBudget, type FailedLoginBudget } from './failed-logins';
import { ROLES, type KeyIdentity, type Role } from './keys';

/** Key names for managed keys (STYLE 6). The record is hash-tagged by id so it is one slot. */
export const managedKeyNames = {
  record: (id: string): string => `apikey:{${id}}`,
  tenantIndex: (tenant: string): string => `apikey:index:${tenant}`,
} as const;

export const MANAGED_KEY_RE = /^ck_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** Below 1 s minus a Redis round trip: a revocation is visible everywhere within 1 s (D27). */
export const RECORD_CACHE_MS = 500;
const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;
/** The KDF of records written before P331 (salted scrypt, base64 hash and salt): still verified. */
const SCRYPT_KDF = `scrypt:N=${SCRYPT.N},r=${SCRYPT.r},p=${SCRYPT.p}`;
/** D27: the SHA-256 of the secret, hex. A record without `kdf` and without `salt` is one (D27's own form). */
export const SHA256_KDF = 'sha256';
const MAX_CACHE = 10_000;
/**
 * How long a dead (expired or revoked) key's record is kept, listed as such: 30 days, the usual
 * monthly access review, and long enough to answer "what was this key" for any incident report
 * that names one. Storage is bounded by keys minted per 30 days (plus live keys), not by all
 * keys ever minted.
 */
export const RETAIN_MS = 30 * 24 * 3600 * 1000;

/** When Redis deletes the record: RETAIN_MS after the key stopped working, null while it has no end. */
export function recordDeleteAt(r: Pick<ManagedKeyRecord, 'expiresAt' | 'revokedAt'>): number | null {
  const dead = [r.expiresAt, r.revokedAt].filter((t): t is number => t !== null);
  return dead.length === 0 ? null : Math.min(...dead) + RETAIN_MS;
}

export interface ManagedKeyRecord {
  id: string;
  tenant: string;
  role: Role;
  principalId: string;
  name: string;
  createdAt: number;
  expiresAt: number | null;
  revoked: boolean;
  revokedAt: number | null;
  /** Only for a scrypt record (before P331); '' for SHA-256. */
  salt: string;
  hash: string;
  /** SHA256_KDF, or the scrypt label of a record written before P331. */
  kdf: string;
}

/** The API view of a record: never the hash or salt. */
export function managedKeyToApi(r: ManagedKeyRecord): Record<string, unknown> {
  return {
    id: r.id,
    tenant: r.tenant,
    role: r.role,
    principal_id: r.principalId,
    name: r.name,
    created_at: new Date(r.createdAt).toISOString(),
    expires_at: r.expiresAt === null ? null : new Date(r.expiresAt).toISOString(),
    revoked: r.revoked,
    revoked_at: r.revokedAt === null ? null : new Date(r.revokedAt).toISOString(),
  };
}

function scrypt(secret: string, salt: Buffer): Promise<Buffer> {
  const opts: ScryptOptions = { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p };
  return new Promise((resolve, reject) => scryptCb(secret, salt, SCRYPT.keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

/** Parses a stored hash; a corrupt record (or one of a KDF we do not know) fails closed (the key does not authenticate). */
function decodeRecord(h: Record<string, string>): ManagedKeyRecord | null {
  if (!h['id'] || !h['tenant'] || !h['hash']) return null;
  const kdf = h['kdf'] ?? (h['salt'] ? SCRYPT_KDF : SHA256_KDF);
  if (kdf === SCRYPT_KDF ? !h['salt'] : kdf !== SHA256_KDF || !/^[0-9a-f]{64}$/.test(h['hash'])) return null;
  const role = h['role'] as Role;
  if (!ROLES.includes(role)) return null;
  const num = (v: string | undefined): number | null => (v === undefined || v === '' ? null : Number.isFinite(Number(v)) ? Number(v) : null);
  return {
    id: h['id'],
    tenant: h['tenant'],
    role,
    principalId: h['principal_id'] ?? `key-${h['id']}`,
    name: h['name'] ?? '',
    createdAt: num(h['created_at']) ?? 0,
    expiresAt: num(h['expires_at']),
    revoked: h['revoked'] === '1',
    revokedAt: num(h['revoked_at']),
    salt: h['salt'] ?? '',
    hash: h['hash'],
    kdf,
  };
}

export interface CreateKeyInput {
  tenant: string;
  role: Role;
  principalId?: string;
  name?: string;
  expiresAt?: number;
  /** Lifetime from the key's `created_at` (`ttl_seconds`); `expiresAt` wins. */
  ttlMs?: number;
}

export interface ManagedKeys {
  /** Identity for a `ck_` key, null when unknown, revoked, expired or wrong; throws ApiError redis_unavailable when it cannot tell. */
  lookup(presented: string, client?: string): Promise<KeyIdentity | null>;
  create(input: CreateKeyInput): Promise<{ key: string; record: ManagedKeyRecord }>;
  list(tenant: string): Promise<ManagedKeyRecord[]>;
  /** False when the id is unknown or belongs to another tenant. */
  revoke(tenant: string, id: string): Promise<ManagedKeyRecord | null>;
}

/** Which failed-login budget refused a check (P296): `key`, one address and key id; `address`, the address's. */
export const FAILED_LOGIN_SCOPES = ['key', 'address'] as const;
export type FailedLoginScope = (typeof FAILED_LOGIN_SCOPES)[number];

/** Index members a key create checks for records Redis deleted (P252). */
const PRUNE_SAMPLE = 100;

export function createManagedKeys(
  redis: RedisClient,
  opts: {
    now?: () => number;
    failedLogins?: FailedLoginBudget;
    addressFailedLogins?: FailedLoginBudget;
    /** P296: a check refused 429 by a failed-login budget. */
    onThrottled?: (scope: FailedLoginScope) => void;
  } = {},
): ManagedKeys {
  const now = opts.now ?? clusterNow;
  const budget = opts.failedLogins ?? createFailedLoginBudget({ now });
  const addressBudget = opts.addressFailedLogins ?? createFailedLoginBudget({ now, burst: FAILED_LOGIN_ADDRESS_BURST, perMinute: FAILED_LOGIN_ADDRESS_PER_MINUTE });
  const records = new Map<string, { rec: ManagedKeyRecord | null; at: number }>();
  const inflight = new Map<string, Promise<ManagedKeyRecord | null>>();
  // `${id}:${sha256(secret)}` → the stored hash it was verified against; scrypt runs again only if the record's hash changes.
  const verified = new Map<string, string>();

  // Records Redis deleted (RETAIN_MS after expiry or revocation) leave the index too. Safe
  // against create: the record is written before the id is indexed, and ids are never reused.
  const dropFromIndex = async (index: string, gone: string[]): Promise<void> => {
    if (gone.length > 0) await redis.srem(index, ...gone);
  };
  /**
   * Up to PRUNE_SAMPLE random members (SRANDMEMBER): a bounded cost per create, however many
   * records of the last 30 days the index holds; each create removes its share of the dead ids,
   * so they stay a small fraction of the index.
   */
  const dropGone = async (index: string): Promise<void> => {
    const ids = await redis.srandmember(index, PRUNE_SAMPLE);
    const exists = await Promise.all(ids.map((id) => redis.exists(managedKeyNames.record(id))));
    await dropFromIndex(index, ids.filter((_, i) => exists[i] === 0));
  };

  const bounded = <K, V>(m: Map<K, V>, k: K, v: V): void => {
    if (m.size >= MAX_CACHE && !m.has(k)) {
      const oldest = m.keys().next();
      if (!oldest.done) m.delete(oldest.value);
    }
    m.set(k, v);
  };

  const fetch = async (id: string): Promise<ManagedKeyRecord | null> => {
    const cached = records.get(id);
    if (cached && now() - cached.at < RECORD_CACHE_MS) return cached.rec;
    let p = inflight.get(id);
    if (!p) {
      p = (async () => {
        try {
          const rec = decodeRecord(await redis.hgetall(managedKeyNames.record(id)));
          bounded(records, id, { rec, at: now() });
          return rec;
        } finally {
          inflight.delete(id);
        }
      })();
      inflight.set(id, p);
    }
    try {
      return await p;
    } catch (err) {
      throw new ApiError('redis_unavailable', { message: 'cannot verify a managed API key: key store unavailable', cause: err });
    }
  };

  // `${id}:${sha256(secret)}:${stored hash}` → the scrypt check running for it: lookups of one
  // secret that arrive together share one check (P155), e.g. a client fanning out after a rollout.
  const checking = new Map<string, Promise<boolean>>();

  /**
   * Whether `secret` matches the record's hash, remembered in `verified` when it does. P55: a
   * client that failed too many checks runs no more scrypt until its budget refills; P155: the
   * token is taken before the check (so checks in flight count) and given back when it passes.
   */
  const check = async (vk: string, secret: string, rec: ManagedKeyRecord, client: string | undefined): Promise<boolean> => {
    const ck = `${vk}:${rec.hash}`;
    const running = checking.get(ck);
    if (running) return running;
    // P222: one budget per (address, key id) and a larger one per address (see failed-logins.ts).
    const address = client === undefined ? undefined : addressBucket(client);
    const idClient = address === undefined ? undefined : `${address} ${rec.id}`;
    if (address !== undefined && idClient !== undefined) {
      const wait = budget.take(idClient);
      if (wait > 0) {
        opts.onThrottled?.('key');
        throw rateLimitError(wait);
      }
      const waitAddress = addressBudget.take(address);
      if (waitAddress > 0) {
        budget.refund(idClient);
        opts.onThrottled?.('address');
        throw rateLimitError(waitAddress);
      }
    }
    const p = (async () => {
      let wrong = false;
      try {
        const sha256 = rec.kdf === SHA256_KDF;
        const derived = sha256 ? createHash('sha256').update(secret).digest() : await scrypt(secret, Buffer.from(rec.salt, 'base64'));
        const stored = Buffer.from(rec.hash, sha256 ? 'hex' : 'base64');
        wrong = stored.length !== derived.length || !timingSafeEqual(stored, derived);
        if (!wrong) bounded(verified, vk, rec.hash);
        return !wrong;
      } finally {
        checking.delete(ck);
        if (!wrong && address !== undefined && idClient !== undefined) {
          budget.refund(idClient);
          addressBudget.refund(address);
        }
      }
    })();
    checking.set(ck, p);
    return p;
  };

  return {
    async lookup(presented, client) {
      const m = MANAGED_KEY_RE.exec(presented);
      if (!m) return null;
      const id = m[1] as string;
      const secret = m[2] as string;
      const rec = await fetch(id);
      if (!rec || rec.revoked) return null;
      if (rec.expiresAt !== null && rec.expiresAt <= now()) return null;
      const vk = `${id}:${createHash('sha256').update(secret).digest('base64')}`;
      if (verified.get(vk) !== rec.hash && !(await check(vk, secret, rec, client))) return null;
      const identity: KeyIdentity = { tenant: rec.tenant, role: rec.role, principalId: rec.principalId, revocable: true };
      if (rec.expiresAt !== null) identity.expiresAt = rec.expiresAt;
      return identity;
    },

    async create(input) {
      const id = randomBytes(8).toString('hex');
      const secret = randomBytes(32).toString('base64url');
      const hash = createHash('sha256').update(secret).digest('hex');
      const createdAt = now();
      const record: ManagedKeyRecord = {
        id,
        tenant: input.tenant,
        role: input.role,
        principalId: input.principalId ?? `key-${id}`,
        name: input.name ?? '',
        createdAt,
        // From created_at, taken after the hash: a ttl counted before it ended a key early (P217).
        expiresAt: input.expiresAt ?? (input.ttlMs !== undefined ? createdAt + input.ttlMs : null),
        revoked: false,
        revokedAt: null,
        salt: '',
        hash,
        kdf: SHA256_KDF,
      };
      const fields: Record<string, string> = {
        id,
        tenant: record.tenant,
        role: record.role,
        principal_id: record.principalId,
        name: record.name,
        created_at: String(record.createdAt),
        expires_at: record.expiresAt === null ? '' : String(record.expiresAt),
        revoked: '0',
        hash: record.hash,
        kdf: SHA256_KDF,
      };
      // Record first, then the index: a crash in between leaves a working key missing from the list, never a listed key that cannot be revoked.
      // The record and its deletion time in one MULTI (one key): never a record of an expiring key that is kept forever.
      const recKey = managedKeyNames.record(id);
      const deleteAt = recordDeleteAt(record);
      if (deleteAt === null) await redis.hset(recKey, fields);
      else await execReplies(redis.multi().hset(recKey, fields).pexpireat(recKey, deleteAt).exec());
      const index = managedKeyNames.tenantIndex(record.tenant);
      await redis.sadd(index, id);
      // P252: the ids whose record Redis deleted leave the index here too, not only when someone
      // lists it, so a tenant whose automation mints short-lived keys and never lists them keeps
      // an index as small as its records. Best effort: the key works either way.
      await dropGone(index).catch(() => undefined);
      return { key: `ck_${id}_${secret}`, record };
    },

    async list(tenant) {
      const index = managedKeyNames.tenantIndex(tenant);
      const ids = (await redis.smembers(index)).sort();
      const rows = await Promise.all(ids.map((id) => redis.hgetall(managedKeyNames.record(id))));
      await dropFromIndex(index, ids.filter((_, i) => Object.keys(rows[i] ?? {}).length === 0));
      return rows
        .map(decodeRecord)
        .filter((r): r is ManagedKeyRecord => r !== null && r.tenant === tenant)
        .sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
    },

    async revoke(tenant, id) {
      if (!/^[0-9a-f]{16}$/.test(id)) return null;
      const rec = decodeRecord(await redis.hgetall(managedKeyNames.record(id)));
      if (!rec || rec.tenant !== tenant) return null;
      const recKey = managedKeyNames.record(id);
      if (!rec.revoked) {
        const at = now();
        rec.revoked = true;
        rec.revokedAt = at;
        // The deletion time in the same MULTI: were the record deleted since the read above, this
        // HSET recreates only a partial hash (no id, tenant or hash: an unknown key), which the
        // PEXPIREAT makes expire like the record would have, never kept forever.
        const deleteAt = recordDeleteAt(rec) ?? at + RETAIN_MS;
        await execReplies(redis.multi().hset(recKey, { revoked: '1', revoked_at: String(at) }).pexpireat(recKey, deleteAt).exec());
      } else if (rec.revokedAt !== null) {
        // Revoked before records had a lifetime: same deadline, so a repeated DELETE never extends it.
        await redis.pexpireat(recKey, recordDeleteAt(rec) ?? rec.revokedAt + RETAIN_MS);
      }
      records.delete(id); // this replica sees it at once; others within RECORD_CACHE_MS
      return rec;
    },
  };
}
