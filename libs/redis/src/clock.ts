// One clock for every replica (P241). Timestamps one replica writes (a job's createdAt, updatedAt
// and deadline, a retry's due time, a worker snapshot's capture time, a rate-limit bucket's refill
// time) are compared by another replica with its own now. Hosts whose clocks disagree (a VM
// resumed from a pause, a broken NTP) then timed jobs out while they ran, skipped or stretched
// retry backoffs, failed jobs at submit for a deadline not yet reached, and let a rate limit
// through. Each service measures how far its clock is from Redis's (TIME, the round trip's
// midpoint, the best of a few samples) and every cross-replica timestamp is taken with
// `clusterNow()`: this host's clock moved by that offset. Redis is the one server every replica
// already talks to, so the replicas agree with each other as closely as they reach it.
import type { EventLog, RedisClient } from './client';

/**
 * An offset below this is not applied: NTP keeps hosts within milliseconds, every bound compared
 * this way is seconds long, and a zero offset keeps a host that agrees with Redis on its own clock
 * exactly (no jitter of a few milliseconds from each new measurement).
 */
export const CLOCK_OFFSET_MIN_MS = 250;
/**
 * An applied offset moves only when a measurement differs from it by more than this: each one
 * lands a little off (half a round trip), and moving by those few milliseconds would step shared
 * timestamps back and forth.
 */
export const CLOCK_OFFSET_STEP_MS = 100;
/** How often a running service measures its offset again. */
export const CLOCK_SYNC_INTERVAL_MS = 15_000;
const SAMPLES = 3;

/**
 * The host clock moved this far against the monotonic clock since the last measurement: it was
 * stepped (NTP corrected it, a VM resumed and set it), and the applied offset no longer fits it.
 */
export const CLOCK_STEP_MS = 1_000;

let offsetMs = 0;
/** Host clock minus monotonic clock at the last measurement: what the offset was measured against. */
let wallMinusMono = Date.now() - performance.now();
/** Running syncs' "measure again now" (any one of them does). */
const resyncs = new Set<() => void>();

/**
 * Now in the replicas' shared time (Redis's clock, within a round trip): use it for every timestamp
 * another replica reads. P283: the offset was measured against the host clock as it was; a host
 * clock stepped since (by a second or more) was moved by the offset for up to a sync interval
 * (15 s): a host corrected from minutes behind ran minutes ahead. Until a new measurement, such a
 * step is not taken: now is the monotonic clock from the last measurement, and a new one starts.
 */
export function clusterNow(): number {
  const wall = Date.now();
  if (resyncs.size === 0) return wall + offsetMs;
  const mono = performance.now();
  if (Math.abs(wall - mono - wallMinusMono) < CLOCK_STEP_MS) return wall + offsetMs;
  const [resync] = resyncs;
  resync?.();
  // Whole milliseconds, as Date.now(): timestamps go into integer wire fields (a fractional one
  // made every state broadcast of the window fail to encode, P305).
  return Math.round(mono + wallMinusMono) + offsetMs;
}

/** The offset clusterNow() applies now (0 until a sync found one of at least CLOCK_OFFSET_MIN_MS). */
export function clockOffsetMs(): number {
  return offsetMs;
}

export interface ClockSync {
  /** Resolves after the first measurement, or after FIRST_SYNC_WAIT_MS if Redis has not answered by then: a service awaits it before it takes work. */
  readonly ready: Promise<void>;
  /** One measurement (a few TIME round trips); resolves with the measured offset, or null when Redis did not answer. */
  syncOnce(): Promise<number | null>;
  stop(): void;
}

/** How long a starting service waits for its first measurement; a Redis that is down is measured once it is back. */
export const FIRST_SYNC_WAIT_MS = 2_000;

export interface ClockSyncOptions {
  intervalMs?: number;
  /**
   * Called after each measurement with the measured offset and the one now applied (0 below
   * CLOCK_OFFSET_MIN_MS): services log a change and export the gauge.
   */
  onMeasure?: (measuredMs: number, appliedMs: number, previousMs: number) => void;
  /** Logs when the applied offset changes: a warn naming it, an info when the clocks agree again. */
  log?: EventLog;
  /** For tests: the host clock to measure against Redis's. */
  hostNow?: () => number;
}

/** One sample: Redis's time minus the midpoint of the round trip that read it, and that round trip. */
async function sample(redis: RedisClient, hostNow: () => number): Promise<{ offset: number; rtt: number }> {
  const t0 = hostNow();
  const [s, us] = await redis.time();
  const t1 = hostNow();
  const redisMs = Number(s) * 1000 + Number(us) / 1000;
  return { offset: redisMs - (t0 + t1) / 2, rtt: t1 - t0 };
}

/**
 * Measures this host's clock against Redis's now and every `intervalMs`, and moves clusterNow()
 * by the offset once it is at least CLOCK_OFFSET_MIN_MS. A failed measurement keeps the last
 * offset. The first starts at once; a service awaits `ready` before it takes work, so a skewed
 * host does not write timestamps in its own time (unless Redis is down at its start: then from
 * the first measurement after Redis is back).
 */
export function startClockSync(redis: RedisClient, o: ClockSyncOptions = {}): ClockSync {
  const hostNow = o.hostNow ?? ((): number => Date.now());
  let busy = false;
  let stopped = false;
  /** Monotonic time of the last measurement a step started: at most one a second while Redis does not answer. */
  let stepSyncAt = -Infinity;
  // Logged once per change: a Redis that is down is logged by the client already, but a user
  // whose ACL refuses TIME would otherwise leave this host on its own clock without a word.
  let failing = false;
  const syncOnce = async (): Promise<number | null> => {
    if (busy || stopped) return null;
    busy = true;
    try {
      let best: { offset: number; rtt: number } | undefined;
      for (let i = 0; i < SAMPLES; i++) {
        const s = await sample(redis, hostNow);
        if (!best || s.rtt < best.rtt) best = s;
      }
      if (!best || stopped) return null;
      const measured = Math.round(best.offset);
      const previous = offsetMs;
      wallMinusMono = Date.now() - performance.now();
      let applied = Math.abs(measured) >= CLOCK_OFFSET_MIN_MS ? measured : 0;
      if (applied !== 0 && previous !== 0 && Math.abs(applied - previous) <= CLOCK_OFFSET_STEP_MS) applied = previous;
      offsetMs = applied;
      if (applied !== previous) {
        if (applied !== 0) o.log?.warn("this host's clock is off Redis's: timestamps other replicas read are taken in Redis's time", { offset_ms: applied, previous_offset_ms: previous });
        else o.log?.info("this host's clock agrees with Redis's again", { measured_offset_ms: measured, previous_offset_ms: previous });
      }
      o.onMeasure?.(measured, applied, previous);
      if (failing) o.log?.info("redis's time is read again");
      failing = false;
      return measured;
    } catch (err) {
      if (!failing) o.log?.warn("could not read redis's time (TIME); this host's clock is used until it can", { err: err instanceof Error ? err.message : String(err), offset_ms: offsetMs });
      failing = true;
      return null;
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void syncOnce(), o.intervalMs ?? CLOCK_SYNC_INTERVAL_MS);
  timer.unref();
  const resync = (): void => {
    const at = performance.now();
    if (busy || stopped || at - stepSyncAt < 1_000) return;
    stepSyncAt = at;
    void syncOnce();
  };
  resyncs.add(resync);
  const ready = new Promise<void>((resolve) => {
    const waited = setTimeout(resolve, FIRST_SYNC_WAIT_MS);
    void syncOnce().finally(() => {
      clearTimeout(waited);
      resolve();
    });
  });
  return {
    ready,
    syncOnce,
    stop() {
      stopped = true;
      clearInterval(timer);
      resyncs.delete(resync);
    },
  };
}
