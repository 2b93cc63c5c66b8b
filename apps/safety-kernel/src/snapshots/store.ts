import type { RedisClient } from '@cordum/redis';
import { z } from 'zod';
import { safetyKeys } from '../keys';
import type { PolicySnapshot } from '@cordum/config-overlay';

export const SNAPSHOT_HISTORY = 10;
const META_TTL_S = 30 * 24 * 3600;

export interface SnapshotInfo {
  id: string;
  loadedAtMs: number;
  ruleCount: number;
}

const metaSchema = z.object({ rule_count: z.number().int().nonnegative() });

/**
 * Holds the active policy snapshot in memory and records each activation in
 * `cordum:safety:snapshots` (CONTRACT §5). Later sources (config bundles, D22)
 * compose a new effective policy and call `activate` the same way.
 */
export class SnapshotStore {
  private current: PolicySnapshot | null = null;
  /** Set while the active snapshot is not yet in Redis (Redis was down at activation). */
  private unrecorded: PolicySnapshot | null = null;

  constructor(
    private readonly redis: RedisClient,
    /** Called synchronously when a different snapshot becomes active (the decision cache flushes here). */
    private readonly onChange?: (snap: PolicySnapshot) => void,
  ) {}

  get active(): PolicySnapshot | null {
    return this.current;
  }

  /**
   * Swaps the in-memory policy first (evaluation must not wait on Redis), then
   * records it. A failed record is kept and retried by `ensureRecorded` (the
   * readiness probe) rather than failing the activation: the history is
   * informational, the policy is not.
   */
  async activate(snap: PolicySnapshot): Promise<{ changed: boolean; recorded: boolean }> {
    const changed = this.current?.id !== snap.id;
    this.current = snap;
    if (changed) this.onChange?.(snap);
    this.unrecorded = snap;
    return { changed, recorded: await this.ensureRecorded() };
  }

  /** True once the active snapshot is recorded in Redis. Never throws. */
  async ensureRecorded(): Promise<boolean> {
    const snap = this.unrecorded;
    if (!snap) return true;
    try {
      await this.record(snap);
      if (this.unrecorded === snap) this.unrecorded = null;
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Idempotent: re-recording the same id only refreshes its score. Separate commands keep it
   * cluster-safe. A snapshot trimmed from the history takes its meta key with it (P252: nothing
   * reads it any more, and a pipeline pushing bundles every minute left ~43,000 for 30 days),
   * unless another replica recorded it again meanwhile (one doing so between the check and the
   * delete loses its rule count in the listing: informational, shown as 0).
   */
  async record(snap: PolicySnapshot): Promise<void> {
    const key = safetyKeys.snapshots();
    await this.redis.zadd(key, snap.loadedAtMs, snap.id);
    await this.redis.set(safetyKeys.snapshotMeta(snap.id), JSON.stringify({ rule_count: snap.policy.rules.length }), 'EX', META_TTL_S);
    const trimmed = await this.redis.zrange(key, '0', String(-(SNAPSHOT_HISTORY + 1)));
    if (trimmed.length === 0) return;
    // Exactly those (not by rank: another replica's entry added meanwhile would go without its meta key).
    await this.redis.zrem(key, ...trimmed);
    await Promise.all(
      trimmed.map(async (id) => {
        if ((await this.redis.zscore(key, id)) === null) await this.redis.del(safetyKeys.snapshotMeta(id));
      }),
    );
  }

  /** Newest first, at most SNAPSHOT_HISTORY. Unreadable meta fails open to rule count 0 (informational only). */
  async list(): Promise<SnapshotInfo[]> {
    const flat = await this.redis.zrevrange(safetyKeys.snapshots(), 0, SNAPSHOT_HISTORY - 1, 'WITHSCORES');
    const out: SnapshotInfo[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const id = flat[i] ?? '';
      out.push({ id, loadedAtMs: Number(flat[i + 1]), ruleCount: 0 });
    }
    await Promise.all(
      out.map(async (s) => {
        if (this.current?.id === s.id) {
          s.ruleCount = this.current.policy.rules.length;
          return;
        }
        const raw = await this.redis.get(safetyKeys.snapshotMeta(s.id));
        if (!raw) return;
        try {
          const m = metaSchema.safeParse(JSON.parse(raw));
          if (m.success) s.ruleCount = m.data.rule_count;
        } catch {
          // leave 0
        }
      }),
    );
    return out;
  }
}
