// Bounded scans for the reconciler and the pending replayer. Every query reads
// a ZSET by score with a LIMIT, so its cost follows the number of in-flight
// jobs that are due, never the job history (issue 3).
import type { RedisClient } from '@cordum/redis';
import { jobKeys } from './keys';
import { ACTIVE_STATES, type JobState } from './states';

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
  /** `job:retry` entries due at or before `nowMs` (D13). */
  listRetryDue(nowMs: number, limit: number): Promise<ScoredId[]>;
  hasRetry(id: string): Promise<boolean>;
  removeRetry(id: string): Promise<void>;
  /**
   * Repairs the in-flight indexes after a crash between a write and its index update: drops `id`
   * from `seenIn` and files it under `actual` (when that is an in-flight state) scored `sinceMs`.
   * Terminal jobs also leave `job:deadline` and `job:retry`.
   */
  reindex(id: string, seenIn: JobState, actual: JobState | null, sinceMs: number): Promise<void>;
  /** Re-files a deadline entry at `atMs`, or drops it (null). */
  setDeadline(id: string, atMs: number | null): Promise<void>;
  /**
   * The dispatch id worker-sdk last claimed for the job (`worker:claim:{<id>}`, P9), or null.
   * A claim of the current dispatch proves that attempt started (D1).
   */
  claimedDispatch(id: string): Promise<string | null>;
}

function scored(flat: string[]): ScoredId[] {
  const out: ScoredId[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push({ id: String(flat[i]), score: Number(flat[i + 1]) });
  return out;
}

export function createJobScans(redis: RedisClient): JobScans {
  const range = async (key: string, max: number, limit: number) => scored(await redis.zrangebyscore(key, '-inf', max, 'WITHSCORES', 'LIMIT', 0, limit));
  return {
    listActive: (state, beforeMs, limit) => range(jobKeys.active(state), beforeMs, limit),
    listDeadlineDue: (nowMs, limit) => range(jobKeys.deadline(), nowMs, limit),
    listRetryDue: (nowMs, limit) => range(jobKeys.retry(), nowMs, limit),
    async hasRetry(id) {
      return (await redis.zscore(jobKeys.retry(), id)) !== null;
    },
    async removeRetry(id) {
      await redis.zrem(jobKeys.retry(), id);
    },
    async reindex(id, seenIn, actual, sinceMs) {
      if (actual && ACTIVE_STATES.has(actual)) await redis.zadd(jobKeys.active(actual), sinceMs, id);
      if (actual !== seenIn) await redis.zrem(jobKeys.active(seenIn), id);
      if (!actual || !ACTIVE_STATES.has(actual)) {
        if (actual !== 'APPROVAL_REQUIRED') await Promise.all([redis.zrem(jobKeys.deadline(), id), redis.zrem(jobKeys.retry(), id)]);
      }
    },
    async setDeadline(id, atMs) {
      if (atMs === null) await redis.zrem(jobKeys.deadline(), id);
      else await redis.zadd(jobKeys.deadline(), atMs, id);
    },
    async claimedDispatch(id) {
      return (await redis.hget(jobKeys.workerClaim(id), 'dispatch_id')) || null;
    },
  };
}
