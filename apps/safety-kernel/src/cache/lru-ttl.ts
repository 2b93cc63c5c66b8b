/**
 * Bounded LRU map whose entries also expire `ttlMs` after they were written.
 * A Map keeps insertion order, so re-inserting on every hit makes its first key
 * the least recently used one: O(1) get, set and eviction without a linked list.
 * Expired entries are dropped on read, and on each write from the LRU end while the entry there
 * has expired (P173: before, an idle cache kept every expired entry up to maxSize for good).
 */
export class LruTtlCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAtMs: number }>();

  constructor(
    private readonly opts: {
      maxSize: number;
      ttlMs: number;
      /** Monotonic-enough clock; injectable for tests of expiry. */
      now?: () => number;
    },
  ) {
    if (!(opts.maxSize >= 1)) throw new Error('LruTtlCache: maxSize must be >= 1');
    if (!(opts.ttlMs > 0)) throw new Error('LruTtlCache: ttlMs must be > 0');
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    if (e.expiresAtMs <= this.clock()) return undefined;
    this.entries.set(key, e);
    return e.value;
  }

  set(key: string, value: V): void {
    const now = this.clock();
    this.entries.delete(key);
    for (const [k, e] of this.entries) {
      if (e.expiresAtMs > now) break;
      this.entries.delete(k);
    }
    this.entries.set(key, { value, expiresAtMs: now + this.opts.ttlMs });
    while (this.entries.size > this.opts.maxSize) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  private clock(): number {
    return (this.opts.now ?? Date.now)();
  }
}
