// Distributed rate limiting (D24, BEHAVIOURS §7): a token bucket per tenant
// (else client IP) in Redis shared by all replicas; when Redis is disabled
// (REDIS_RATE_LIMIT=false) or not usable, each replica limits alone with an
// in-memory bucket of the same size, and says so in a gauge and one log line per switch.
import { Counter, Gauge, type Registry } from 'prom-client';
import { clusterNow, defineScripts, scriptSpec, type RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import bucketLua from './lua/token-bucket-1.lua';
import { withTimeout } from '../util/timeout';
import { errorText } from '@cordum/service-kit';

export interface RateLimits {
  rps: number;
  burst: number;
}

export type LimitDecision = { allowed: true } | { allowed: false; retryAfterMs: number };
export type LimiterMode = 'redis' | 'memory';

export const rateLimitKey = (key: string): string => `cordum:rl:{${key}}`;

/** A request must not wait long on a sick Redis: past this it is decided in memory. Not shorter: a spurious
 * fallback under CPU load hands out a second (per-replica) budget. */
const REDIS_DECISION_TIMEOUT_MS = 1_000;
const MAX_MEMORY_BUCKETS = 50_000;
/** P181's probe bucket: tenants match ^[a-z0-9]… and addresses have no `_`, so no request shares it. */
const PROBE_KEY = '_probe';
const ALLOWED: LimitDecision = { allowed: true };

export interface RateLimiter {
  check(key: string): Promise<LimitDecision>;
  setLimits(l: RateLimits): void;
  limits(): RateLimits;
  readonly mode: LimiterMode;
}

export interface RateLimiterOptions {
  redis: RedisClient;
  useRedis: boolean;
  limits: RateLimits;
  registry: Registry;
  logger: Logger;
  now?: () => number;
}

/** Same algorithm as the Lua script, for one replica. */
export function memoryBucket(now: () => number) {
  const buckets = new Map<string, { t: number; ts: number }>();
  return (key: string, l: RateLimits): LimitDecision => {
    const n = now();
    let b = buckets.get(key);
    if (!b) {
      if (buckets.size >= MAX_MEMORY_BUCKETS) {
        // Evict the least recently touched (Map order); a fresh bucket is full, so eviction only ever loosens one key.
        const oldest = buckets.keys().next();
        if (!oldest.done) buckets.delete(oldest.value);
      }
      b = { t: l.burst, ts: n };
    } else buckets.delete(key);
    buckets.set(key, b);
    if (n > b.ts) {
      b.t += ((n - b.ts) * l.rps) / 1000;
      b.ts = n;
    }
    if (b.t > l.burst) b.t = l.burst;
    if (b.t >= 1) {
      b.t -= 1;
      return { allowed: true };
    }
    return { allowed: false, retryAfterMs: Math.ceil(((1 - b.t) * 1000) / l.rps) };
  };
}

export function createRateLimiter(o: RateLimiterOptions): RateLimiter {
  const now = o.now ?? clusterNow;
  const scripts = defineScripts(o.redis, [scriptSpec('token-bucket-1.lua', bucketLua)]);
  /** One script call: `count` tokens from `key`'s shared bucket ([granted, retry_after_ms]), cut at REDIS_DECISION_TIMEOUT_MS. */
  const takeTokens = (key: string, l: RateLimits, count: number): Promise<[number, number]> =>
    withTimeout(scripts.run<[number, number]>('token-bucket', [rateLimitKey(key)], [now(), l.rps, l.burst, count]), REDIS_DECISION_TIMEOUT_MS, 'rate limit');
  const memory = memoryBucket(now);
  let limits: RateLimits = { ...o.limits };
  let mode: LimiterMode = o.useRedis ? 'redis' : 'memory';
  const hits = new Counter({ name: 'cordum_rate_limit_hits_total', help: 'Requests rejected with 429 rate_limited', registers: [o.registry] });
  // A scrape while in the fallback starts one probe (P181): without it the gauge, and its alert,
  // stayed at 1 after Redis came back until a request happened to go through this replica. The
  // probe is the limiter's own script taking no token on a key no tenant or address can have, so
  // a Redis that answers PING but refuses the script's write (OOM, an ACL) keeps the fallback
  // instead of flapping. The scrape does not wait on it (a sick Redis must not slow /metrics);
  // the next scrape reads its outcome.
  let probing = false;
  const probe = (): void => {
    if (probing || mode !== 'memory' || !o.useRedis || !redisUsable()) return;
    probing = true;
    takeTokens(PROBE_KEY, limits, 0).then(
      () => {
        probing = false;
        if (mode === 'memory') switchTo('redis', '');
      },
      () => {
        probing = false;
      },
    );
  };
  const inMemory = new Gauge({
    name: 'cordum_rate_limit_in_memory',
    help: '1 while this replica has fallen back to its own in-memory buckets because Redis is unreachable (0 with REDIS_RATE_LIMIT=false, which is logged at start)',
    registers: [o.registry],
    collect: () => probe(),
  });
  const fallbacks = new Counter({ name: 'cordum_rate_limit_fallback_total', help: 'Switches from the shared Redis limiter to the in-memory one', registers: [o.registry] });
  // A fallback, not the configured mode: the alert on this gauge means "cannot reach Redis".
  inMemory.set(0);
  if (!o.useRedis) o.logger.warn('rate limiter uses per-replica in-memory buckets (REDIS_RATE_LIMIT=false)', { ...limits });

  const switchTo = (next: LimiterMode, why: string): void => {
    if (next === mode) return;
    mode = next;
    inMemory.set(next === 'memory' ? 1 : 0);
    if (next === 'memory') {
      fallbacks.inc();
      o.logger.warn('rate limiter falling back to per-replica in-memory buckets', { reason: why });
    } else o.logger.info('rate limiter back on shared redis buckets');
  };

  const redisUsable = (): boolean => o.redis.status === 'ready';

  // Group commit per bucket (issue 7): while one script call for a key is in flight, the
  // requests that arrive for the same key wait and then go as one call with their count, which
  // grants each of them one token from the same atomic step (so D24's bound is unchanged). A lone
  // request is sent at once, as before; under load one call serves every request of a round trip.
  const lanes = new Map<string, Array<(d: LimitDecision) => void>>();

  const decideInMemory = (key: string, waiters: Array<(d: LimitDecision) => void>): void => {
    const l = limits;
    for (const w of waiters) w(memory(key, l));
  };

  /** One script call for every waiter of the batch; false when Redis failed and memory decided. */
  const runBatch = async (key: string, waiters: Array<(d: LimitDecision) => void>): Promise<boolean> => {
    const l = limits;
    if (!redisUsable()) {
      switchTo('memory', `redis is ${o.redis.status}`);
      decideInMemory(key, waiters);
      return false;
    }
    try {
      const [granted, retry] = await takeTokens(key, l, waiters.length);
      switchTo('redis', '');
      const rejected: LimitDecision = { allowed: false, retryAfterMs: Math.max(1, Number(retry)) };
      waiters.forEach((w, i) => w(i < Number(granted) ? ALLOWED : rejected));
      return true;
    } catch (err) {
      switchTo('memory', errorText(err));
      decideInMemory(key, waiters);
      return false;
    }
  };

  /**
   * Sends batches for `key` one after another until nobody waits on it. Requests that queued
   * behind a call that failed have waited once already: memory decides them at once, so no
   * request waits on a sick Redis longer than one REDIS_DECISION_TIMEOUT_MS.
   */
  const drainLane = async (key: string, first: Array<(d: LimitDecision) => void>): Promise<void> => {
    let batch = first;
    let redisOk = true;
    try {
      for (;;) {
        if (redisOk) redisOk = await runBatch(key, batch);
        else decideInMemory(key, batch);
        const next = lanes.get(key);
        if (next === undefined || next.length === 0) {
          lanes.delete(key);
          return;
        }
        batch = next;
        lanes.set(key, []);
      }
    } catch (err) {
      // Nothing above should throw; if something does, a lane left behind would hold every later
      // request of this bucket forever. Memory answers whoever still waits. What can throw (a log
      // line in switchTo) comes before the batch is answered; a waiter answered already keeps its
      // first answer, at the cost of one in-memory token.
      const queued = lanes.get(key) ?? [];
      lanes.delete(key);
      decideInMemory(key, [...batch, ...queued]);
      try {
        o.logger.error('rate limiter batch failed; its requests were decided in memory', { err: errorText(err) });
      } catch {
        // the logger itself failing must not undo the answers above
      }
    }
  };

  const decide = (key: string): Promise<LimitDecision> => {
    if (!o.useRedis) return Promise.resolve(memory(key, limits));
    return new Promise<LimitDecision>((resolve) => {
      const waiting = lanes.get(key);
      if (waiting !== undefined) {
        waiting.push(resolve);
        return;
      }
      lanes.set(key, []);
      void drainLane(key, [resolve]);
    });
  };

  return {
    async check(key) {
      const d = await decide(key);
      if (!d.allowed) hits.inc();
      return d;
    },
    setLimits(l) {
      limits = { ...l };
    },
    limits: () => ({ ...limits }),
    get mode() {
      return mode;
    },
  };
}
