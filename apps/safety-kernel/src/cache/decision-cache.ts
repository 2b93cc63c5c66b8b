import { createHash } from 'node:crypto';
import type { CheckInput, EvalResult } from '../policy/evaluator';
import { LruTtlCache } from './lru-ttl';

export interface DecisionCacheOptions {
  ttlMs: number;
  maxSize: number;
  now?: () => number;
}

/** Hit/miss/size hooks so the cache stays free of prom-client (metrics.ts owns the names). */
export interface DecisionCacheObserver {
  hit(): void;
  miss(): void;
  size(n: number): void;
}

const sortedUnique = (xs: readonly string[]): string[] => [...new Set(xs)].sort();

/**
 * Everything evaluation can look at, canonicalised: risk_tags and requires are
 * set-matched (any / all of), so their order and duplicates do not matter; labels
 * are sorted by key. job_id is left out on purpose: it only feeds velocity
 * windows, and results that touched a window are never cached.
 */
export function decisionCacheKey(snapshotId: string, input: CheckInput): string {
  const labels = Object.keys(input.labels)
    .sort()
    .map((k) => [k, input.labels[k] ?? '']);
  return `${snapshotId}\n${JSON.stringify([
    input.tenant,
    input.topic,
    input.principalId,
    input.capability,
    sortedUnique(input.riskTags),
    sortedUnique(input.requires),
    labels,
    input.actorType,
  ])}`;
}

/**
 * The key the cache stores: decisionCacheKey's SHA-256. The key itself is the JSON of every input
 * evaluation reads, up to about 245 KB for a job with the largest labels the gateway accepts, so
 * entries counted by `maxSize` held up to 2.4 GB at the default 10,000 and ran a 512 MB kernel out
 * of heap (P173); 44 characters each now. SHA-256 collisions are not a practical concern.
 */
export function storedKey(snapshotId: string, input: CheckInput): string {
  return createHash('sha256').update(decisionCacheKey(snapshotId, input)).digest('base64');
}

/**
 * Per-replica cache of Check/Evaluate decisions for one policy snapshot at a time.
 * Bound to a *generation* (the snapshot id): `reset(id)` on activation empties
 * it, and a result computed against an older snapshot that finishes after the
 * switch is dropped by `put`, so a decision from an old policy is never served.
 */
export class DecisionCache {
  private readonly lru: LruTtlCache<EvalResult>;
  private generation: string | null = null;

  constructor(
    opts: DecisionCacheOptions,
    private readonly observer: DecisionCacheObserver,
  ) {
    this.lru = new LruTtlCache<EvalResult>({ maxSize: opts.maxSize, ttlMs: opts.ttlMs, now: opts.now });
  }

  get size(): number {
    return this.lru.size;
  }

  /** Empties the cache when the active snapshot changes (a no-op for the same id). */
  reset(snapshotId: string): void {
    if (this.generation === snapshotId) return;
    this.generation = snapshotId;
    this.lru.clear();
    this.observer.size(0);
  }

  get(snapshotId: string, input: CheckInput): EvalResult | undefined {
    this.reset(snapshotId);
    const r = this.lru.get(storedKey(snapshotId, input));
    if (r) this.observer.hit();
    else this.observer.miss();
    this.observer.size(this.lru.size);
    return r;
  }

  /** Stores a fresh result unless it read a velocity window (D20) or its snapshot is no longer current. */
  put(input: CheckInput, r: EvalResult): boolean {
    if (r.velocityConsulted || r.snapshotId !== this.generation) return false;
    // The trace is only returned by Explain/Simulate, which never use the cache.
    this.lru.set(storedKey(r.snapshotId, input), { ...r, trace: [] });
    this.observer.size(this.lru.size);
    return true;
  }
}
