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
}

export interface AcquireOptions extends LeaseOptions {
  /** Give up (resolve null) after this long. 0 = a single attempt. */
  waitMs: number;
  /** Base pause between attempts, jittered ±50% so contenders do not retry in lockstep. Default 20 ms. */
  retryMs?: number;
}

export interface Locks {
  tryAcquire(o: LeaseOptions): Promise<Lease | null>;
  acquire(o: AcquireOptions): Promise<Lease | null>;
  elector(o: ElectorOptions): LeaderElector;
  /** The generic fenced write (fencedSet-2.lua): 1 written, -2 fenced. */
  fencedSet(lockKey: string, target: string, token: string, value: string): Promise<1 | -2>;
}

export const DEFAULT_LOCK_WAIT_HISTOGRAM = 'cordum_lock_wait_seconds';

export function createLocks(redis: RedisClient, opts: LocksOptions = {}): Locks {
  const runner = defineScripts(redis, lockScripts);
  const hist = opts.metrics ? waitHistogram(opts.metrics, opts.histogramName ?? DEFAULT_LOCK_WAIT_HISTOGRAM) : undefined;

  const tryAcquire = (o: LeaseOptions) => tryAcquireWith(runner, o);

  const locks: Locks = {
    tryAcquire,
    async acquire(o) {
      const started = performance.now();
      const deadline = started + Math.max(0, o.waitMs);
      const retryMs = Math.max(1, o.retryMs ?? 20);
      for (;;) {
        const lease = await tryAcquire(o);
        const now = performance.now();
        if (lease || now >= deadline) {
          hist?.observe({ result: lease ? 'acquired' : 'timeout' }, (now - started) / 1000);
          return lease;
        }
        const pause = Math.min(deadline - now, retryMs * (0.5 + Math.random()));
        await new Promise((r) => setTimeout(r, pause));
      }
    },
    elector: (o) => createElector(tryAcquire, o),
    fencedSet: (lockKey, target, token, value) => runner.run<1 | -2>('fencedSet', [lockKey, target], [token, value]),
  };
  return locks;
}

async function tryAcquireWith(runner: ScriptRunner, o: LeaseOptions): Promise<Lease | null> {
  if (!(o.ttlMs > 0)) throw new RangeError(`ttlMs must be > 0, got ${o.ttlMs}`);
  const sentAt = performance.now();
  const fence = await runner.run<number>('acquire', [o.key, o.fenceKey ?? `${o.key}:fence`], [o.owner, Math.ceil(o.ttlMs)]);
  if (fence <= 0) return null;
  return new Lease(runner, o.key, o.owner, fence, o.ttlMs, sentAt);
}

/** One histogram per registry and name: several Locks instances in one process share it. */
function waitHistogram(registry: Registry, name: string): Histogram<'result'> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Histogram<'result'>;
  return new Histogram({
    name,
    help: 'Time spent waiting to acquire a lock, by result (acquired | timeout).',
    labelNames: ['result'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
}
