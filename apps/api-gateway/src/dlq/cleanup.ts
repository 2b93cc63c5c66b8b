// DLQ retention (D14, D45): one replica, elected under cordum:dlq:cleanup
// (D7 lease), trims index members older than 30 days from dlq:index and every
// per-tenant dlq:index:{<tenant>}. Entries themselves expire by TTL; this only
// keeps the indexes from growing without bound.
import { DLQ_TTL_MS, jobKeys } from '@cordum/job-store';
import type { LeaderElector, Locks } from '@cordum/locks';
import { scanKeys, type RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';

export const DLQ_CLEANUP_LOCK = 'cordum:dlq:cleanup';

export interface DlqCleanup {
  start(): void;
  stop(): Promise<void>;
  isLeader(): boolean;
  /** One trim pass (leader or not); returns members removed. */
  runOnce(nowMs?: number): Promise<number>;
}

export function createDlqCleanup(o: { redis: RedisClient; locks: Locks; logger: Logger; instanceId: string; intervalMs: number; retentionMs?: number }): DlqCleanup {
  const retention = o.retentionMs ?? DLQ_TTL_MS;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let elector: LeaderElector | null = null;

  const runOnce = async (nowMs = Date.now()): Promise<number> => {
    const cutoff = `(${nowMs - retention}`;
    let removed = Number(await o.redis.zremrangebyscore(jobKeys.dlqIndex(), '-inf', cutoff));
    for await (const key of scanKeys(o.redis, jobKeys.dlqIndexTenant('*'))) {
      removed += Number(await o.redis.zremrangebyscore(key, '-inf', cutoff));
    }
    if (removed > 0) o.logger.info('dlq cleanup trimmed index entries', { removed });
    return removed;
  };

  const tick = () => {
    if (!elector?.isLeader()) return;
    running = runOnce().catch((err: unknown) => o.logger.warn('dlq cleanup failed', { err: err instanceof Error ? err.message : String(err) }));
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
