import { performance } from 'node:perf_hooks';
import { Histogram, type Registry } from 'prom-client';
import { defineScripts, type RedisClient, type ScriptRunner } from '@cordum/redis';
import { createElector, type ElectorOptions, type LeaderElector } from './elector';
import { Lease, type LeaseOptions } from './lease';
import { lockScripts } from './scripts';

export interface LocksOptions {
  /** Registry for the wait histogram; without one, waits are not recorded. */
  metrics?: Registry;
  /** Default `cordum_lock_wait_seconds`; the scheduler passes `cordum_scheduler_job_lock_wait_seconds`. */
  histogramName?: string;
  /** Bucket bounds (s) of the wait histogram; the scheduler passes its job path's (issue 7). */
  histogramBuckets?: number[];
}

const DEFAULT_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export interface AcquireOptions extends LeaseOptions {
  /** Give up (resolve null) after this long. 0 = a single attempt. */
  waitMs: number;
  /** Base pause between attempts, jittered ±50% so contenders do not retry in lockstep. Default 20 ms. */
  retryMs?: number;
}

/** `acquireAndRead`: also read a hash in the lock's slot once the lease is held. */
export interface AcquireReadOptions extends AcquireOptions {
  /** A hash in the same hash slot as the lock (e.g. the record the lock guards). */
  readKey: string;
}

export interface LeaseWithRead {
  lease: Lease;
  /** HGETALL of `readKey` as the flat [field, value, ...] array ([] when the key is absent). */
  hash: string[];
}

export interface Locks {
  tryAcquire(o: LeaseOptions): Promise<Lease | null>;
  acquire(o: AcquireOptions): Promise<Lease | null>;
  /**
   * `acquire`, and in the same atomic script read `readKey`: what the caller reads is what the
   * lease guards from its first instant, at the cost of one round trip instead of two.
   */
  acquireAndRead(o: AcquireReadOptions): Promise<LeaseWithRead | null>;
  elector(o: ElectorOptions): LeaderElector;
  /** The generic fenced write (fencedSet-2.lua): 1 written, -2 fenced. */
  fencedSet(lockKey: string, target: string, token: string, value: string): Promise<1 | -2>;
  /**
   * Resolves as soon as a lease of this instance on `key` is released (release() or
   * markReleased()), or after `maxWaitMs`. A hint to retry, never a grant: the caller still has
   * to acquire or check, and a release by another process is only seen when the time is up.
   */
  whenReleased(key: string, maxWaitMs: number): Promise<void>;
  /** How many callers of this instance wait in whenReleased (or a retry pause) for `key` (diagnostics, tests). */
  waiters(key: string): number;
}

export const DEFAULT_LOCK_WAIT_HISTOGRAM = 'cordum_lock_wait_seconds';

export function createLocks(redis: RedisClient, opts: LocksOptions = {}): Locks {
  const runner = defineScripts(redis, lockScripts);
  const hist = opts.metrics ? waitHistogram(opts.metrics, opts.histogramName ?? DEFAULT_LOCK_WAIT_HISTOGRAM, opts.histogramBuckets ?? DEFAULT_WAIT_BUCKETS) : undefined;

  // Local hand-off (issue 7): a handler waiting for a job lock held by another handler of this
  // same process is woken when that one releases it, instead of at its next jittered retry
  // (20 ms on average), which used to add a retry pause to most results of fast workers.
  const releaseWaiters = new Map<string, Set<() => void>>();
  const onReleased = (key: string): void => {
    const set = releaseWaiters.get(key);
    if (!set) return;
    releaseWaiters.delete(key);
    for (const wake of set) wake();
  };
  const whenReleased = (key: string, maxWaitMs: number): Promise<void> =>
    new Promise<void>((resolve) => {
      let set = releaseWaiters.get(key);
      if (!set) releaseWaiters.set(key, (set = new Set()));
      const waiters = set;
      const wake = (): void => {
        clearTimeout(timer);
        waiters.delete(wake);
        if (waiters.size === 0 && releaseWaiters.get(key) === waiters) releaseWaiters.delete(key);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, maxWaitMs));
      waiters.add(wake);
    });

  const tryAcquire = (o: LeaseOptions) => tryAcquireWith(runner, o, onReleased);

  /** Retries `attempt` with jitter until it yields a value or `o.waitMs` has passed (null). */
  async function waitFor<T>(o: AcquireOptions, attempt: () => Promise<T | null>): Promise<T | null> {
    const started = performance.now();
    const deadline = started + Math.max(0, o.waitMs);
    const retryMs = Math.max(1, o.retryMs ?? 20);
    for (;;) {
      const got = await attempt();
      const now = performance.now();
      if (got || now >= deadline) {
        hist?.observe({ result: got ? 'acquired' : 'timeout' }, (now - started) / 1000);
        return got;
      }
      await whenReleased(o.key, Math.min(deadline - now, retryMs * (0.5 + Math.random())));
    }
  }

  const locks: Locks = {
    tryAcquire,
    acquire: (o) => waitFor(o, () => tryAcquire(o)),
    acquireAndRead: (o) => waitFor(o, () => tryAcquireRead(runner, o, onReleased)),
    elector: (o) => createElector(tryAcquire, o),
    fencedSet: (lockKey, target, token, value) => runner.run<1 | -2>('fencedSet', [lockKey, target], [token, value]),
    whenReleased,
    waiters: (key) => releaseWaiters.get(key)?.size ?? 0,
  };
  return locks;
}

/**
 * The fence counter of a lock given none (leader leases): in the lock's Redis Cluster slot, since
 * the acquire script touches both. A key with a hash tag keeps it (`<key>:fence`); an untagged
 * one, hashed whole, becomes the tag (`{<key>}:fence`). `<key>:fence` alone hashed elsewhere, and
 * every leader campaign on a cluster failed with CROSSSLOT.
 */
export function defaultFenceKey(key: string): string {
  const open = key.indexOf('{');
  const close = open >= 0 ? key.indexOf('}', open + 1) : -1;
  return close > open + 1 ? `${key}:fence` : `{${key}}:fence`;
}

async function tryAcquireWith(runner: ScriptRunner, o: LeaseOptions, onReleased?: (key: string) => void): Promise<Lease | null> {
  if (!(o.ttlMs > 0)) throw new RangeError(`ttlMs must be > 0, got ${o.ttlMs}`);
  const sentAt = performance.now();
  const fence = await runner.run<number>('acquire', [o.key, o.fenceKey ?? defaultFenceKey(o.key)], [o.owner, Math.ceil(o.ttlMs)]);
  if (fence <= 0) return null;
  return new Lease(runner, o.key, o.owner, fence, o.ttlMs, sentAt, onReleased);
}

async function tryAcquireRead(runner: ScriptRunner, o: AcquireReadOptions, onReleased: (key: string) => void): Promise<LeaseWithRead | null> {
  if (!(o.ttlMs > 0)) throw new RangeError(`ttlMs must be > 0, got ${o.ttlMs}`);
  const sentAt = performance.now();
  const reply = await runner.run<[number, string[]?]>('acquire-read', [o.key, o.fenceKey ?? defaultFenceKey(o.key), o.readKey], [o.owner, Math.ceil(o.ttlMs)]);
  const fence = Number(reply[0]);
  if (!(fence > 0)) return null;
  return { lease: new Lease(runner, o.key, o.owner, fence, o.ttlMs, sentAt, onReleased), hash: reply[1] ?? [] };
}

/** One histogram per registry and name: several Locks instances in one process share it. */
function waitHistogram(registry: Registry, name: string, buckets: number[]): Histogram<'result'> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Histogram<'result'>;
  return new Histogram({
    name,
    help: 'Time spent waiting to acquire a lock, by result (acquired | timeout).',
    labelNames: ['result'],
    buckets,
    registers: [registry],
  });
}
