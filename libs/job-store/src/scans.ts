// Bounded scans for the reconciler and the pending replayer. Every query reads
// a ZSET by score with a LIMIT, so its cost follows the number of in-flight
// jobs that are due, never the job history (issue 3).
import type { RedisClient } from '@cordum/redis';
import { clusterNow } from '@cordum/redis';
import { jobKeys } from './keys';
import { ACTIVE_STATES, type JobState } from './states';
import type { JobRecord } from './types';

export interface ScoredId {
  id: string;
  /** Epoch ms: state entry (job:active), deadline (job:deadline) or due time (job:retry). */
  score: number;
}

export interface JobScans {
  /** Jobs that entered `state` at or before `beforeMs`, oldest first. */
  listActive(state: JobState, beforeMs: number, limit: number): Promise<ScoredId[]>;
  /** Jobs whose deadline_ms (D46) is at or before `nowMs`. */
  listDeadlineDue(nowMs: number, limit: number): Promise<ScoredId[]>;
  /**
   * Held jobs (APPROVAL_REQUIRED) created at or before `createdBeforeMs`, read from each tenant's
   * listing index that the index registry names (`job:index:keys`, P89), at most `limit` per
   * tenant, oldest first. Indexes lag their records (D16): a caller re-reads each job.
   *
   * `from` (P247), kept by the caller from one pass to the next: where each listing's next
   * read starts (its rank among the members created by `createdBeforeMs`). A read that fills
   * `limit` moves it on by `limit`, a shorter one sends it back to the start, so every held job
   * is read within a few passes however many older ones are not due yet (a re-held job's hold
   * counts from its last hold, its listing score from its creation). Without it every pass
   * reads the `limit` oldest.
   */
  listHeld(createdBeforeMs: number, limit: number, from?: Map<string, number>): Promise<ScoredId[]>;
  /** `job:retry` entries due at or before `nowMs` (D13). */
  listRetryDue(nowMs: number, limit: number): Promise<ScoredId[]>;
  hasRetry(id: string): Promise<boolean>;
  /** When the job's `job:retry` entry is due (epoch ms), or null without one. */
  retryDueAt(id: string): Promise<number | null>;
  removeRetry(id: string): Promise<void>;
  /**
   * P134: the job's JobCancel is owed to its worker, to be sent by the schedulers at `dueAtMs`.
   * Filed before the write that ends the job, so a writer killed between that write and its
   * publish, or a publish that failed, still gets the worker told. Once a publish succeeded the
   * entry is due again later (`deferCancel`, P135) until the attempt answers (`removeCancel`).
   * True when this call added the entry (none was there): a writer whose write is then refused
   * takes back what it added (P308).
   */
  fileCancel(id: string, dueAtMs: number): Promise<boolean>;
  /** P135: the entry, if still there, is next due at `dueAtMs` (never re-created once removed). */
  deferCancel(id: string, dueAtMs: number): Promise<void>;
  /** `job:cancel:outbox` entries due at or before `nowMs`, soonest first. */
  listCancelsDue(nowMs: number, limit: number): Promise<ScoredId[]>;
  /** true when an entry was there. */
  removeCancel(id: string): Promise<boolean>;
  /**
   * Repairs the in-flight indexes after a crash between a write and its index update: drops `id`
   * from `seenIn` and files it under `actual` (when that is an in-flight state) scored `sinceMs`.
   * Terminal jobs also leave `job:deadline` and `job:retry`.
   */
  reindex(id: string, seenIn: JobState, actual: JobState | null, sinceMs: number): Promise<void>;
  /**
   * reindex for a job found through `seenIn` and read back as `job` (null: gone): filed under its
   * actual state since its last write, and, when it moved on, also in that state's tenant listing
   * (D16), which its lost index move would have done: a job re-held for approval by a replica
   * that died right after shows in the approvals list. A job found in a DLQ state also gets its
   * DLQ entry first (idempotent; a deleted entry stays deleted), which a write that lost its side
   * writes never made (decisions.md P38; the store's own repairIndex).
   */
  repairIndex(id: string, seenIn: JobState, job: JobRecord | null): Promise<void>;
  /**
   * P15: parks a job waiting for a worker on `topic` until `expiresAtMs` (its D13 bound): one entry
   * in `job:parked:<topic>`, the topic in `job:parked:topics`, no `job:retry` entry, and its orphan
   * clock in `job:active:<state>` moved forward to the expiry, so neither the retry drain nor the
   * orphan sweep looks at it while it waits. The entry is in before the topic is listed (on a
   * cluster the topic waits for the entry's reply), which dropParkedTopicIfEmpty relies on.
   */
  park(id: string, topic: string, state: JobState, expiresAtMs: number): Promise<void>;
  listParkedTopics(): Promise<string[]>;
  /** Parked jobs of `topic` expiring at or before `maxMs` (Infinity: all), soonest first. */
  listParked(topic: string, maxMs: number, limit: number): Promise<ScoredId[]>;
  /** When the job parked on `topic` expires (its parked score), or null when it is not parked there. */
  parkedExpiry(topic: string, id: string): Promise<number | null>;
  /**
   * Drops parked entries. When `dueAtMs` is given they move to `job:retry` due then, and their
   * orphan clock (moved to the expiry by `park`) comes back to `dueAtMs`: if that retry is lost
   * (the drive fails, and so does filing it again, with Redis away), the orphan sweep still finds
   * the job a `SCHEDULER_PENDING_REPLAY_AGE` later instead of at its parked expiry (P28).
   */
  unpark(topic: string, ids: string[], dueAtMs?: number): Promise<void>;
  /**
   * Forgets a topic whose parked set is empty (re-adds it if a park raced the removal: a park
   * whose topic was listed before the removal had its entry in before that, so the re-check
   * after the removal sees it).
   */
  dropParkedTopicIfEmpty(topic: string): Promise<void>;
  /** Moves a job's orphan clock in `job:active:<state>` to `atMs` unless it is already later. */
  touchOrphanClock(id: string, state: JobState, atMs: number): Promise<void>;
  /**
   * Moves a job's `job:active:<state>` entry later, to `atMs`, only while the job is there and its
   * score is earlier (ZADD XX GT): a scan that looked at a job and left it as it was puts it behind
   * the entries it has not reached, without ever re-filing a job that left the state since, or
   * moving back one that a newer write re-scored.
   */
  deferActive(id: string, state: JobState, atMs: number): Promise<void>;
  /** Re-files a deadline entry at `atMs`, or drops it (null). */
  setDeadline(id: string, atMs: number | null): Promise<void>;
  /** The job's `job:deadline` score (when it is next due), or null without an entry. */
  deadlineScore(id: string): Promise<number | null>;
  /**
   * The dispatch id worker-sdk last claimed for the job (`worker:claim:{<id>}`, P9), or null.
   * A claim of the current dispatch proves that attempt started (D1).
   */
  claimedDispatch(id: string): Promise<string | null>;
}

const HELD: JobState = 'APPROVAL_REQUIRED';

/** The states a job can be parked in (the scheduler's no-worker wait). */
const PARKABLE_STATES: readonly JobState[] = ['PENDING', 'RETRYING'];

/** A `WITHSCORES` reply as ids with numeric scores. */
export function scored(flat: string[]): ScoredId[] {
  const out: ScoredId[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push({ id: String(flat[i]), score: Number(flat[i + 1]) });
  return out;
}

export function createJobScans(redis: RedisClient): JobScans {
  const range = async (key: string, max: number | '+inf', limit: number, offset = 0) => scored(await redis.zrangebyscore(key, '-inf', max, 'WITHSCORES', 'LIMIT', offset, limit));
  /** A member's score as a number, or null when it is not in the set. */
  const scoreOf = async (key: string, id: string): Promise<number | null> => {
    const score = await redis.zscore(key, id);
    return score === null ? null : Number(score);
  };
  const touchOrphanClock = async (id: string, state: JobState, atMs: number): Promise<void> => {
    await redis.zadd(jobKeys.active(state), 'GT', atMs, id);
  };
  const reindex = async (id: string, seenIn: JobState, actual: JobState | null, sinceMs: number): Promise<void> => {
    if (actual && ACTIVE_STATES.has(actual)) await redis.zadd(jobKeys.active(actual), sinceMs, id);
    if (actual !== seenIn) await redis.zrem(jobKeys.active(seenIn), id);
    if (!actual || !ACTIVE_STATES.has(actual)) {
      if (actual !== 'APPROVAL_REQUIRED') await Promise.all([redis.zrem(jobKeys.deadline(), id), redis.zrem(jobKeys.retry(), id)]);
    }
  };
  return {
    listActive: (state, beforeMs, limit) => range(jobKeys.active(state), beforeMs, limit),
    listDeadlineDue: (nowMs, limit) => range(jobKeys.deadline(), nowMs, limit),
    listRetryDue: (nowMs, limit) => range(jobKeys.retry(), nowMs, limit),
    async listHeld(createdBeforeMs, limit, from) {
      // The registry holds every tenant's listing keys (a dozen per tenant): Redis filters them.
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, flat] = await redis.zscan(jobKeys.indexRegistry(), cursor, 'MATCH', jobKeys.indexState('*', HELD), 'COUNT', 1000);
        cursor = next;
        for (let i = 0; i < flat.length; i += 2) keys.push(String(flat[i]));
      } while (cursor !== '0');
      const out: ScoredId[] = [];
      const listings = new Set(keys);
      for (const key of listings) {
        const rank = from?.get(key) ?? 0;
        const page = await range(key, createdBeforeMs, limit, rank);
        // Members that leave meanwhile shift the ranks: one may be passed over once, and is read after the wrap.
        if (page.length >= limit) from?.set(key, rank + page.length);
        else from?.delete(key);
        out.push(...page);
      }
      if (from) for (const key of from.keys()) if (!listings.has(key)) from.delete(key);
      return out;
    },
    async hasRetry(id) {
      return (await redis.zscore(jobKeys.retry(), id)) !== null;
    },
    async removeRetry(id) {
      await redis.zrem(jobKeys.retry(), id);
    },
    async fileCancel(id, dueAtMs) {
      return (await redis.zadd(jobKeys.cancelOutbox(), dueAtMs, id)) === 1;
    },
    async deferCancel(id, dueAtMs) {
      // XX: an attempt that answered meanwhile removed the entry, and stays settled.
      await redis.zadd(jobKeys.cancelOutbox(), 'XX', dueAtMs, id);
    },
    listCancelsDue: (nowMs, limit) => range(jobKeys.cancelOutbox(), nowMs, limit),
    async removeCancel(id) {
      return (await redis.zrem(jobKeys.cancelOutbox(), id)) > 0;
    },
    reindex,
    async repairIndex(id, seenIn, job) {
      if (job && job.state !== seenIn) {
        const key = jobKeys.indexState(job.tenant, job.state);
        await redis.zadd(key, job.createdAt, id);
        // A key this creates has no TTL: registered, the retention pass trims it and it goes once empty (P89).
        await redis.zadd(jobKeys.indexRegistry(), clusterNow(), key);
        // Found in the approvals listing (the hold expiry reads it, P99) but no longer held: out of
        // it, or a stale entry keeps a place among the oldest holds every pass reads.
        if (seenIn === 'APPROVAL_REQUIRED') await redis.zrem(jobKeys.indexState(job.tenant, seenIn), id);
      }
      await reindex(id, seenIn, job?.state ?? null, job?.updatedAt ?? clusterNow());
    },
    async park(id, topic, state, expiresAtMs) {
      // The entry goes in before its topic is listed: the leader's dropParkedTopicIfEmpty
      // (ZCARD, SREM, ZCARD again) is right only for parks whose ZADD runs before their SADD.
      // Standalone Redis runs them in the order sent on its one connection, so both leave
      // together; on a cluster the two keys sit in other slots (other nodes), and a SADD sent
      // alongside could run before the leader's SREM and the ZADD after its re-check, leaving
      // the job parked on a topic nobody lists, so the SADD waits for the ZADD's reply there.
      const entered = redis.zadd(jobKeys.parked(topic), expiresAtMs, id);
      const listed = redis.isCluster ? entered.then(() => redis.sadd(jobKeys.parkedTopics(), topic)) : redis.sadd(jobKeys.parkedTopics(), topic);
      await Promise.all([entered, listed, redis.zrem(jobKeys.retry(), id), touchOrphanClock(id, state, expiresAtMs)]);
    },
    listParkedTopics: () => redis.smembers(jobKeys.parkedTopics()),
    listParked: (topic, maxMs, limit) => range(jobKeys.parked(topic), Number.isFinite(maxMs) ? maxMs : '+inf', limit),
    parkedExpiry: (topic, id) => scoreOf(jobKeys.parked(topic), id),
    async unpark(topic, ids, dueAtMs) {
      if (ids.length === 0) return;
      if (dueAtMs !== undefined) {
        const scoredIds = ids.flatMap((id) => [dueAtMs, id]);
        // XX: a parked job is PENDING or RETRYING; only the index that holds it is touched.
        await Promise.all([
          redis.zadd(jobKeys.retry(), ...scoredIds),
          ...PARKABLE_STATES.map((state) => redis.zadd(jobKeys.active(state), 'XX', ...scoredIds)),
        ]);
      }
      await redis.zrem(jobKeys.parked(topic), ...ids);
    },
    async dropParkedTopicIfEmpty(topic) {
      if ((await redis.zcard(jobKeys.parked(topic))) > 0) return;
      await redis.srem(jobKeys.parkedTopics(), topic);
      if ((await redis.zcard(jobKeys.parked(topic))) > 0) await redis.sadd(jobKeys.parkedTopics(), topic);
    },
    touchOrphanClock,
    async deferActive(id, state, atMs) {
      await redis.zadd(jobKeys.active(state), 'XX', 'GT', atMs, id);
    },
    async setDeadline(id, atMs) {
      if (atMs === null) await redis.zrem(jobKeys.deadline(), id);
      else await redis.zadd(jobKeys.deadline(), atMs, id);
    },
    deadlineScore: (id) => scoreOf(jobKeys.deadline(), id),
    retryDueAt: (id) => scoreOf(jobKeys.retry(), id),
    async claimedDispatch(id) {
      return (await redis.hget(jobKeys.workerClaim(id), 'dispatch_id')) || null;
    },
  };
}
