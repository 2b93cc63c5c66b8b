// Index retention (D14, D16, D45): one replica, elected under cordum:dlq:cleanup (D7 lease),
// trims the members of every index whose entries have expired: job indexes
// (job:index:{<tenant>}:<state|all>) lose jobs created more than the job TTL ago, the DLQ indexes
// (dlq:index, dlq:index:{<tenant>}) entries older than DLQ_TTL (30 days by default). Records, inputs and DLQ entries
// expire by their own TTL; the indexes are refreshed by every write, so without this pass they
// would grow with the whole history.
import { trimIndexes, type TrimCounts } from '@cordum/job-store';
import type { LeaderElector, Locks } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { errorText } from '@cordum/service-kit';

export const DLQ_CLEANUP_LOCK = 'cordum:dlq:cleanup';

export interface RetentionCleanup {
  start(): void;
  stop(): Promise<void>;
  isLeader(): boolean;
  /** One trim pass (leader or not); returns the members removed from each kind of index. */
  runOnce(nowMs?: number): Promise<TrimCounts>;
}

export function createRetentionCleanup(o: { redis: RedisClient; locks: Locks; logger: Logger; instanceId: string; intervalMs: number; jobTtlMs: number; dlqTtlMs: number }): RetentionCleanup {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let busy = false;
  let elector: LeaderElector | null = null;

  const runOnce = async (nowMs = clusterNow()): Promise<TrimCounts> => {
    const removed = await trimIndexes(o.redis, { nowMs, jobTtlMs: o.jobTtlMs, dlqTtlMs: o.dlqTtlMs });
    if (removed.job > 0 || removed.dlq > 0) o.logger.info('retention trimmed index entries', { job_index: removed.job, dlq_index: removed.dlq });
    return removed;
  };

  const tick = () => {
    // A trim SCANs the keyspace: one at a time, even when a run outlasts the interval.
    if (!elector?.isLeader() || busy) return;
    busy = true;
    running = runOnce()
      .catch((err: unknown) => o.logger.warn('retention trim failed', { err: errorText(err) }))
      .finally(() => {
        busy = false;
      });
  };

  return {
    start() {
      elector = o.locks.elector({ key: DLQ_CLEANUP_LOCK, owner: o.instanceId, logger: o.logger, onElected: () => setImmediate(tick) });
      elector.start();
      timer = setInterval(tick, o.intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
      const e = elector;
      elector = null;
      await e?.stop();
    },
    isLeader: () => elector?.isLeader() ?? false,
    runOnce,
  };
}
