// The scheduler's guard around the safety kernel (BEHAVIOURS §6, D21): every
// Check runs with a deadline behind a circuit breaker whose state lives in
// Redis (`cordum:cb:safety:failures`), so all replicas open, probe and close
// together instead of each hammering a dead kernel on its own. A refused or
// failed call is `unavailable`; intake then applies `input_fail_mode`. Only a
// call that could not reach the kernel counts as a failure: a `kernelError`
// (the kernel answered an error for that job) is neither a failure nor a success.
import { clusterNow, defineScripts, scriptSpec, type RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import type { JobRecord } from '@cordum/job-store';
import breakerLua from './lua/safety-breaker-1.lua';
import type { SafetyChecker, SafetyVerdict } from './safety';
import type { SchedulerMetrics } from './metrics';
import { errorText } from '@cordum/service-kit';

export const SAFETY_BREAKER_KEY = 'cordum:cb:safety:failures';

/** D21 numbers; the config builds them, tests may shorten them. */
export interface BreakerOptions {
  /** Consecutive failures within `windowMs` that open the breaker (3). */
  failureThreshold: number;
  windowMs: number;
  /** How long it stays open before half-open probes (10 s). */
  openMs: number;
  /** Half-open: at most one probe per this interval, across all replicas (2 s). */
  probeIntervalMs: number;
  /** Successful probes that close it again (2). */
  closeAfterSuccesses: number;
  /**
   * After Redis said "closed, no failures", this replica admits calls without asking again for
   * this long (0 = ask every time). Keeps a healthy breaker off the per-job Redis budget; an open
   * decided by another replica is seen at most this late. Any failure clears it at once.
   */
  closedCacheMs: number;
}

export const D21_BREAKER: BreakerOptions = { failureThreshold: 3, windowMs: 30_000, openMs: 10_000, probeIntervalMs: 2_000, closeAfterSuccesses: 2, closedCacheMs: 250 };

export type BreakerState = 'closed' | 'half_open' | 'open';
const STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };
const STATES: readonly BreakerState[] = ['closed', 'half_open', 'open'];

export type Admission = { allowed: true; probe: boolean; failures: number } | { allowed: false; state: 'open' | 'half_open' };

export interface SharedBreaker {
  acquire(): Promise<Admission>;
  /** Reports the outcome of an admitted call; resolves to the state after it. */
  report(ok: boolean, a: { probe: boolean; failures: number }): Promise<{ state: BreakerState; transition: boolean }>;
  /** The shared state, read without changing it (for the gauge, P163). */
  peek(): Promise<BreakerState>;
}

/** How often a replica re-reads the shared breaker for its gauge, checks or not (P163). */
export const BREAKER_GAUGE_REFRESH_MS = 5_000;

export function createSharedBreaker(redis: RedisClient, o: BreakerOptions, now: () => number = clusterNow): SharedBreaker {
  const scripts = defineScripts(redis, [scriptSpec('safety-breaker-1.lua', breakerLua)]);
  const args = (op: string, probe = false): (string | number)[] => [op, now(), o.failureThreshold, o.windowMs, o.openMs, o.probeIntervalMs, o.closeAfterSuccesses, probe ? '1' : '0'];
  let closedUntil = 0;
  return {
    async acquire() {
      if (now() < closedUntil) return { allowed: true, probe: false, failures: 0 };
      const [code, failures] = await scripts.run<[number, number]>('safety-breaker', [SAFETY_BREAKER_KEY], args('acquire'));
      switch (Number(code)) {
        case 0:
          if (Number(failures) === 0 && o.closedCacheMs > 0) closedUntil = now() + o.closedCacheMs;
          return { allowed: true, probe: false, failures: Number(failures) };
        case 1:
          return { allowed: true, probe: true, failures: Number(failures) };
        case 2:
          return { allowed: false, state: 'open' };
        default:
          return { allowed: false, state: 'half_open' };
      }
    },
    async report(ok, a) {
      // Closed and nothing to reset: no Redis round trip on the hot path.
      if (ok && !a.probe && a.failures === 0) return { state: 'closed', transition: false };
      if (!ok) closedUntil = 0;
      const [state, transition] = await scripts.run<[number, number]>('safety-breaker', [SAFETY_BREAKER_KEY], args(ok ? 'success' : 'failure', a.probe));
      return { state: STATES[Number(state)] ?? 'closed', transition: Number(transition) === 1 };
    },
    async peek() {
      // The script's own reading of the hash: no `ou`, closed; before it, open; after it, half-open.
      const ou = await redis.hget(SAFETY_BREAKER_KEY, 'ou');
      if (ou === null) return 'closed';
      return now() < Number(ou) ? 'open' : 'half_open';
    },
  };
}

/**
 * Wraps a Check port with the shared breaker and the scheduler's safety metrics.
 * Breaker storage trouble (Redis) never blocks the Check itself: the call goes
 * through as if the breaker were closed, and the error is logged once per burst.
 */
export function breakerSafetyChecker(inner: SafetyChecker, breaker: SharedBreaker, deps: { metrics: SchedulerMetrics; logger: Logger; gaugeRefreshMs?: number }): SafetyChecker {
  const { metrics, logger } = deps;
  let observed: BreakerState = 'closed';
  let storageFailing = false;
  metrics.breakerState.set(0);

  const observe = (state: BreakerState, transition: boolean): void => {
    if (transition) {
      metrics.breakerTransitions.inc({ to: state });
      if (state === 'open') logger.warn('safety kernel circuit breaker opened', { failure_threshold: 'D21' });
      else if (state === 'closed') logger.info('safety kernel circuit breaker closed');
    }
    if (state !== observed) {
      observed = state;
      metrics.breakerState.set(STATE_VALUE[state]);
    }
  };

  // P163: the gauge also follows the shared state between checks. Set only by this replica's own
  // checks, it kept saying "open" after another replica's probes had closed the breaker, for as
  // long as this one handled no job, and CordumSafetyBreakerOpen paged for hours.
  let refreshing = false;
  const refresh = setInterval(() => {
    if (refreshing) return;
    refreshing = true;
    breaker
      .peek()
      .then((state) => observe(state, false), () => undefined) // Redis away: the checks say so
      .finally(() => (refreshing = false));
  }, deps.gaugeRefreshMs ?? BREAKER_GAUGE_REFRESH_MS);
  refresh.unref();

  const storage = async <T>(p: () => Promise<T>): Promise<T | null> => {
    try {
      const r = await p();
      storageFailing = false;
      return r;
    } catch (err) {
      if (!storageFailing) logger.warn('safety breaker state unavailable in Redis; calling the kernel unguarded', { err: errorText(err) });
      storageFailing = true;
      return null;
    }
  };

  return {
    async check(job: JobRecord): Promise<SafetyVerdict> {
      const a = (await storage(() => breaker.acquire())) ?? { allowed: true as const, probe: false, failures: 0 };
      if (!a.allowed) {
        observe(a.state, false);
        metrics.safetyChecks.inc({ outcome: 'breaker_open' });
        return { kind: 'unavailable', error: `safety kernel circuit breaker ${a.state === 'open' ? 'open' : 'half-open (probe in flight)'}` };
      }
      observe(a.probe ? 'half_open' : 'closed', false);
      const end = metrics.safetyCheckDuration.startTimer();
      const v = await inner.check(job);
      end();
      if (v.kind === 'unavailable' && v.kernelError) {
        // The kernel answered, so this is no sign it is down; nor a clean answer that should
        // reset the failure count or close a half-open breaker. Not reported: a job that
        // reaches a broken rule (or a few of them) cannot open the breaker for every job.
        metrics.safetyChecks.inc({ outcome: 'kernel_error' });
        return v;
      }
      metrics.safetyChecks.inc({ outcome: v.kind });
      const r = await storage(() => breaker.report(v.kind !== 'unavailable', a));
      if (r) observe(r.state, r.transition);
      return v;
    },
    close: () => {
      clearInterval(refresh);
      return inner.close();
    },
  };
}
