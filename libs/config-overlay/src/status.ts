import { z } from 'zod';
import { clusterNow, scanKeys, type RedisClient } from '@cordum/redis';
import { errorText } from '@cordum/service-kit';
import { sectionHash } from './canonical';
import { CLOCK_SLACK_MS } from './clock-slack';
import { DEFAULT_SCOPE, DEFAULT_SCOPE_ID, configKeys, type ConfigKeys, type Scope } from './keys';
import type { ConfigStore } from './store';

/** What a replica writes at `cordum:config:applied:<service>:<instance>` (D33). */
export interface AppliedReport {
  service: string;
  instance_id: string;
  revision: number;
  /** Only the sections this replica consumes; null = applied "absent". */
  hashes: Record<string, string | null>;
  reported_at: string;
  /** False until the replica's first fully successful load (→ NOT_CHECKED). */
  checked: boolean;
}

export const appliedReportSchema = z.object({
  service: z.string(),
  instance_id: z.string(),
  revision: z.number().int(),
  hashes: z.record(z.string(), z.string().nullable()),
  reported_at: z.string(),
  checked: z.boolean(),
});

export type ReplicaSyncStatus = 'IN_SYNC' | 'DRIFTED' | 'NOT_CHECKED';

export interface ReplicaStatus {
  service: string;
  instance_id: string;
  revision: number;
  hashes: Record<string, string | null>;
  status: ReplicaSyncStatus;
  reported_at: string;
}

/**
 * How `document.hashes` shows a stored section that has no hash (config_corrupt: a non-finite
 * number such as a hand-stored `1e999`): this prefix, then the error naming the field.
 */
export const CORRUPT_SECTION_PREFIX = 'config_corrupt: ';

/** The `GET /api/v1/config/status` body (CONTRACT §2). */
export interface ConfigStatus {
  /** `hashes`: per stored section its hash, or CORRUPT_SECTION_PREFIX and why it has none. */
  document: { scope: Scope; scope_id: string; revision: number; hashes: Record<string, string> };
  replicas: ReplicaStatus[];
}

/**
 * How far another replica's clock may run ahead of this one before its report would be trimmed
 * from the index while still live (P154). Index scores are each writer's own expiry time, but
 * whether a report is live is its key's TTL on the server, so the index is only trimmed of entries
 * this long past their score and a reader takes every entry still in it, skipping keys that are
 * gone.
 */
export const REPORT_INDEX_SLACK_MS = CLOCK_SLACK_MS;

/**
 * The report, and its key in `indexKey` scored by when it expires, so the status view reads the
 * index instead of scanning the keyspace (P60); entries REPORT_INDEX_SLACK_MS past their expiry
 * are trimmed here.
 */
export async function writeAppliedReport(redis: RedisClient, key: string, report: AppliedReport, ttlMs: number, indexKey: string = configKeys().appliedIndex()): Promise<void> {
  const ms = Math.max(1, Math.round(ttlMs));
  const now = clusterNow();
  await Promise.all([
    redis.set(key, JSON.stringify(report), 'PX', ms),
    redis.zadd(indexKey, now + ms, key),
    redis.zremrangebyscore(indexKey, '-inf', now - REPORT_INDEX_SLACK_MS),
  ]);
}

/** A cleanly stopping replica's report, and its index entry, go at once. */
export async function removeAppliedReport(redis: RedisClient, key: string, indexKey: string = configKeys().appliedIndex()): Promise<void> {
  await Promise.all([redis.del(key), redis.zrem(indexKey, key)]);
}

/**
 * The report keys from the index (P60), live or lately expired (the caller skips keys that are
 * gone, P154). A keyspace SCAN cost one round trip per 500 keys, so
 * on a Redis holding a week of jobs `GET /config/status` ran past its 5 s budget. Only while the
 * index is empty (every replica still an older version that does not index its report) is the
 * keyspace scanned.
 */
async function* reportKeys(redis: RedisClient, keys: ConfigKeys): AsyncGenerator<string> {
  const index = keys.appliedIndex();
  const cutoff = clusterNow() - REPORT_INDEX_SLACK_MS;
  const [, live] = await Promise.all([redis.zremrangebyscore(index, '-inf', cutoff), redis.zrangebyscore(index, cutoff, '+inf')]);
  if (live.length > 0) {
    yield* live;
    return;
  }
  yield* scanKeys(redis, keys.appliedPattern());
}

/**
 * Drift view: each live report against the stored document. IN_SYNC iff every section the replica
 * reports has the document's hash; revision is informational (a no-op write bumps it without
 * changing any hash). Expired reports are gone from Redis, so the replica disappears here too.
 * A report that does not parse is skipped (fails open: it is a view, not a gate).
 */
export async function configStatus(store: ConfigStore, redis: RedisClient = store.redis, o: { scope?: Scope; scopeId?: string } = {}): Promise<ConfigStatus> {
  const scope = o.scope ?? DEFAULT_SCOPE;
  const scopeId = o.scopeId ?? DEFAULT_SCOPE_ID;
  const doc = await store.get(scope, scopeId);
  // One section with no canonical form (a hand-stored `1e999`) is shown as such, not a failed
  // view: its entry reads `config_corrupt: <why>`, which no replica reports, so every replica that
  // consumes it is DRIFTED (each keeps what it applied before).
  const hashes = new Map<string, string | null>();
  const hashOf = (section: string): string | null => {
    let h = hashes.get(section);
    if (h === undefined) {
      try {
        h = sectionHash(doc.data, section);
      } catch (err) {
        h = `${CORRUPT_SECTION_PREFIX}${errorText(err)}`;
      }
      hashes.set(section, h);
    }
    return h;
  };
  const replicas: ReplicaStatus[] = [];
  const seen = new Set<string>();
  for await (const key of reportKeys(redis, store.keys)) {
    if (seen.has(key)) continue;
    seen.add(key);
    const raw = await redis.get(key);
    if (raw === null) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      continue;
    }
    const r = appliedReportSchema.safeParse(parsed);
    if (!r.success) continue;
    const rep = r.data;
    const inSync = Object.entries(rep.hashes).every(([section, h]) => hashOf(section) === h);
    replicas.push({
      service: rep.service,
      instance_id: rep.instance_id,
      revision: rep.revision,
      hashes: rep.hashes,
      status: !rep.checked ? 'NOT_CHECKED' : inSync ? 'IN_SYNC' : 'DRIFTED',
      reported_at: rep.reported_at,
    });
  }
  replicas.sort((a, b) => (a.service === b.service ? a.instance_id.localeCompare(b.instance_id) : a.service.localeCompare(b.service)));
  const docHashes: Record<string, string> = {};
  for (const section of Object.keys(doc.data).sort()) {
    const h = hashOf(section);
    if (h !== null) docHashes[section] = h;
  }
  return { document: { scope, scope_id: scopeId, revision: doc.revision, hashes: docHashes }, replicas };
}
