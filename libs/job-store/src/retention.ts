// Index retention (D16, D45, D14): index ZSETs outlive the entries they point at, because every
// write refreshes their TTL, so a leader trims members scored before the retention cutoff. Job
// indexes are scored by the job's createdAt, the moment its record got the job TTL, so a member
// older than the TTL points at a record that has expired, unless the record's lifetime was
// renewed since (an approval, P75; a new hold, P99): such a member stays until its record is gone
// (P143), so the job is still listed and its hold still found by the expiry pass.
import { scanKeys, type RedisClient } from '@cordum/redis';
import { jobKeys } from './keys';
import { DLQ_STATES, isJobState } from './states';

/** Members removed per round trip: each command stays short however far behind the trim is. */
const TRIM_CHUNK = 500;

/** Every per-tenant index key (`job:index:{<t>}:<state>`, `dlq:index:{<t>}`) matches this; the global `dlq:index` does not. */
const TENANT_INDEX_PATTERN = '*index:{*';

/** Which retention a per-tenant index key follows: `job` for `job:index:{<t>}:*`, `dlq` for `dlq:index:{<t>}`, null for any other key. */
export function indexRetention(key: string): 'job' | 'dlq' | null {
  if (key.startsWith('job:index:{')) return 'job';
  if (key.startsWith('dlq:index:{')) return 'dlq';
  return null;
}

/**
 * Removes the members of ZSET `key` scored before `beforeMs`, at most `chunk` per command; with
 * `alive`, a member it answers true for is kept (and read past). Not atomic, and need not be: a
 * job's index score is its createdAt, the same in every index it moves through, so a member read
 * below the cutoff is below it again if re-added meanwhile.
 */
export async function trimIndex(redis: RedisClient, key: string, beforeMs: number, chunk = TRIM_CHUNK, alive?: (ids: string[]) => Promise<boolean[]>): Promise<number> {
  let removed = 0;
  // P176: each page starts at the last score read, past the members kept at that score, never at
  // an offset counting every member kept so far: Redis walks an offset one member at a time, so
  // a pass over K kept members cost K²/chunk steps (seconds of blocked Redis an hour for a tenant
  // with a few hundred thousand DLQ jobs, whose records P74 keeps 30 days).
  let min = '-inf';
  let keptAtMin = 0;
  for (;;) {
    const flat = await redis.zrangebyscore(key, min, `(${beforeMs}`, 'WITHSCORES', 'LIMIT', keptAtMin, chunk);
    if (flat.length === 0) return removed;
    const ids = flat.filter((_, i) => i % 2 === 0);
    const scores = flat.filter((_, i) => i % 2 === 1);
    const live = alive ? await alive(ids) : [];
    const dead = ids.filter((_, i) => live[i] !== true);
    if (dead.length > 0) removed += Number(await redis.zrem(key, ...dead));
    if (ids.length < chunk) return removed;
    const last = scores[scores.length - 1] ?? '';
    const keptAtLast = scores.filter((s, i) => s === last && live[i] === true).length;
    if (min === last) keptAtMin += keptAtLast;
    else {
      min = last;
      keptAtMin = keptAtLast;
    }
  }
}

/**
 * P143: which of these jobs keep their listings past JOB_TTL: those whose record is still there
 * (its lifetime was renewed: a hold, an approval) and not in a DLQ state (one HGET of the state
 * each, sent together; on a cluster each goes to its own node). P236: a DLQ job's record lives as
 * long as its entry (30 days, P74), and kept in the job indexes it was looked at again in every
 * pass until then (an EXISTS per DLQ job per pass, 50 M a pass at 100 jobs/s); it leaves them at
 * JOB_TTL, as P74 says, and stays in the DLQ listing.
 */
export function stillListed(redis: RedisClient): (ids: string[]) => Promise<boolean[]> {
  return async (ids) =>
    (await Promise.all(ids.map((id) => redis.hget(jobKeys.meta(id), 'state')))).map((state) => state !== null && !(isJobState(state) && DLQ_STATES.has(state)));
}

export interface TrimCounts {
  job: number;
  dlq: number;
}

/** Registry members per ZADD when a scan registers the keys it found. */
const REGISTER_CHUNK = 500;

/**
 * One retention pass over every index: job indexes lose members created before `nowMs - jobTtlMs`
 * whose record has expired or is in the DLQ (one HGET per such member, stillListed), DLQ indexes members filed before
 * `nowMs - dlqTtlMs`. The per-tenant keys come from the index
 * registry (`job:index:keys`), which every writer of such a key keeps (index-writer.ts, writeDlq),
 * so the pass costs a few commands per index key, not a SCAN of every key in Redis (tens of
 * millions at a million jobs a day). Only the first pass after an upgrade scans, once, to register
 * the keys written before the registry existed. A registered key leaves the registry once it is
 * gone and its last refresh is older than its TTL (it expired with no write for that long).
 */
export async function trimIndexes(redis: RedisClient, o: { nowMs: number; jobTtlMs: number; dlqTtlMs: number; chunk?: number }): Promise<TrimCounts> {
  const cutoff = { job: o.nowMs - o.jobTtlMs, dlq: o.nowMs - o.dlqTtlMs };
  const counts: TrimCounts = { job: 0, dlq: 0 };
  counts.dlq += await trimIndex(redis, jobKeys.dlqIndex(), cutoff.dlq, o.chunk);
  const registry = jobKeys.indexRegistry();
  if ((await redis.exists(jobKeys.indexRegistryScanned())) === 0) {
    let found: (string | number)[] = [];
    const register = async (): Promise<void> => {
      if (found.length > 0) await redis.zadd(registry, ...found);
      found = [];
    };
    for await (const key of scanKeys(redis, TENANT_INDEX_PATTERN)) {
      if (indexRetention(key) === null) continue;
      found.push(o.nowMs, key);
      if (found.length >= 2 * REGISTER_CHUNK) await register();
    }
    await register();
    await redis.set(jobKeys.indexRegistryScanned(), String(o.nowMs));
  }
  const entries = await redis.zrange(registry, '0', '-1', 'WITHSCORES');
  for (let i = 0; i + 1 < entries.length; i += 2) {
    const key = entries[i] ?? '';
    const kind = indexRetention(key);
    if (!kind) {
      await redis.zrem(registry, key);
      continue;
    }
    counts[kind] += await trimIndex(redis, key, cutoff[kind], o.chunk, kind === 'job' ? stillListed(redis) : undefined);
    // A key leaves the registry once it is gone and its last refresh is older than its TTL: it
    // expired for want of writes. One the trim just emptied stays registered that long, so a
    // writer that re-creates it within its TTL-refresh memo (no PEXPIRE, no registration for up
    // to a minute) cannot leave a key without a TTL that nothing ever trims.
    if (Number(entries[i + 1]) < cutoff[kind] && (await redis.exists(key)) === 0) await redis.zrem(registry, key);
  }
  return counts;
}
