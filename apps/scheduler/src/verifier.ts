// Dispatch delivery verification (BEHAVIOURS §3, seed 003 adapted). A publish
// proves nothing about receipt; after SCHEDULER_DISPATCH_VERIFY_DELAY we probe
// the job once:
//   - moved on (RUNNING, terminal, another dispatch)            → delivered
//   - still DISPATCHED on that dispatch, worker sends start acks → fallback:
//     a new attempt through the normal path, only if no worker claimed the old
//     one (reattempt-3.lua); a claimed attempt started → delivered
//   - still DISPATCHED, worker without start acks               → unverified
//     (D1: a silent CAP worker may be running it; the reconciler times it out)
//   - still DISPATCHED and unclaimed, but no worker is free for a new attempt (every
//     candidate saturated) or the job lock is busy                → deferred: probed
//     again after the same delay, while that is before the dispatch timeout (from then
//     on the reconciler retries it every scan). Without this a lost dispatch met by a
//     saturated pool waited for the whole dispatch timeout (decisions.md P31).
//   - the probe failed (Redis error)                             → probe_error, nothing
//     else: uncertainty must never stampede duplicates; the reconciler stays the backstop.
//   - the probe queue was full (Redis slower than the expiries)  → skipped: the oldest
//     waiting probe is dropped, never run; the reconciler's dispatch timeout covers the job.
// A dispatch the worker answers first (its start ack or progress moved the job to
// RUNNING, or its result arrived) is counted delivered then and never probed.
// Timers live in this replica only; a replica that dies loses them and the
// reconciler's dispatch timeout covers those jobs.
import { clusterNow } from '@cordum/redis';
import type { SchedulerContext } from './context';
import { driveRedispatch } from './redispatch';
import { TimerWheel } from './timer-wheel';

export type VerifyOutcome = 'delivered' | 'fallback' | 'deferred' | 'unverified' | 'probe_error' | 'skipped';

interface Pending {
  jobId: string;
  dispatchId: string;
}

export interface Verifier {
  track(jobId: string, dispatchId: string): void;
  /**
   * The worker answered this dispatch (start ack or progress moved it to RUNNING, or its result
   * arrived): counted `delivered` now and its probe dropped, so a finished job is never read again.
   */
  delivered(jobId: string, dispatchId: string): void;
  /** Whether a probe of the job is waiting on the wheel. */
  pending(jobId: string): boolean;
  start(): void;
  /** Stops the wheel and waits for running probes (they hold job locks). */
  stop(): Promise<void>;
  /** Probes one dispatch now (the wheel's expiry handler; exported for tests). */
  probe(jobId: string, dispatchId: string): Promise<VerifyOutcome>;
  /** Expired probes waiting for one of the MAX_CONCURRENT_PROBES places (at most `maxQueued`). */
  queued(): number;
}

const MAX_CONCURRENT_PROBES = 10;
/** Default bound on the probes waiting to run (`maxQueued`). */
export const MAX_QUEUED_PROBES = 10_000;

/**
 * `maxQueued`: expired probes waiting to run (default MAX_QUEUED_PROBES). While Redis is slow,
 * expiries can outrun the probes; past the bound the oldest waiting probe is dropped and counted
 * `skipped` (the reconciler is the backstop, BEHAVIOURS §3), so the queue never grows with the
 * length of the slowdown.
 */
export function createVerifier(ctx: () => SchedulerContext | undefined, o: { enabled: boolean; delayMs: number; tickMs?: number; maxQueued?: number }): Verifier {
  const maxQueued = o.maxQueued ?? MAX_QUEUED_PROBES;
  if (!Number.isInteger(maxQueued) || maxQueued < 1) throw new RangeError(`verifier maxQueued must be a positive integer, got ${maxQueued}`);
  const inflight = new Set<Promise<unknown>>();
  const queue: Pending[] = [];
  let stopped = false;

  const probe = async (jobId: string, dispatchId: string): Promise<VerifyOutcome> => {
    const c = ctx();
    if (!c) return 'skipped';
    let outcome: VerifyOutcome;
    try {
      const job = await c.store.getJob(jobId);
      if (!job || job.state !== 'DISPATCHED' || job.dispatch?.dispatchId !== dispatchId) outcome = 'delivered';
      else if (!job.dispatch.startAck) outcome = 'unverified';
      else {
        const r = await driveRedispatch(c, jobId, dispatchId, 'verify');
        // no_route / busy: try again later (deferred) while the reconciler has not taken over;
        // error: uncertain, so nothing happens (probe_error); exhausted: the reconciler times it
        // out; started / moved: it did arrive.
        const dispatchTimeoutAt = (job.dispatchedAt ?? job.updatedAt) + c.timeouts().reconciler.dispatch_timeout_seconds * 1000;
        if ((r === 'no_route' || r === 'busy') && clusterNow() + o.delayMs < dispatchTimeoutAt && !stopped && !wheel.get(jobId)) {
          wheel.add(jobId, { jobId, dispatchId }, o.delayMs);
          outcome = 'deferred';
        } else {
          outcome = r === 'redispatched' ? 'fallback' : r === 'error' || r === 'busy' ? 'probe_error' : r === 'exhausted' || r === 'no_route' || r === 'past_deadline' ? 'unverified' : 'delivered';
        }
      }
    } catch (err) {
      c.logger.warn('dispatch verify probe failed', { job_id: jobId, dispatch_id: dispatchId, err });
      outcome = 'probe_error';
    }
    c.metrics.verify.inc({ outcome });
    if (outcome === 'fallback') c.logger.warn('dispatch not acknowledged, redispatched', { job_id: jobId, dispatch_id: dispatchId });
    return outcome;
  };

  const pump = (): void => {
    while (!stopped && inflight.size < MAX_CONCURRENT_PROBES) {
      const p = queue.shift();
      if (!p) return;
      const run: Promise<unknown> = probe(p.jobId, p.dispatchId).finally(() => {
        inflight.delete(run);
        pump();
      });
      inflight.add(run);
    }
  };

  const wheel = new TimerWheel<Pending>({
    tickMs: o.tickMs ?? 250,
    maxDelayMs: 60_000,
    onExpire: (_key, item) => {
      queue.push(item);
      // Full: the oldest waiting probe goes, the nearest to its dispatch timeout, where the reconciler takes over anyway.
      if (queue.length > maxQueued) {
        queue.shift();
        ctx()?.metrics.verify.inc({ outcome: 'skipped' });
      }
      pump();
    },
  });

  return {
    track(jobId, dispatchId) {
      if (!o.enabled || stopped) return;
      // Keyed by job: a newer dispatch of the same job replaces the older probe.
      wheel.add(jobId, { jobId, dispatchId }, o.delayMs);
    },
    delivered(jobId, dispatchId) {
      const pending = wheel.get(jobId);
      if (!pending || pending.dispatchId !== dispatchId) return;
      wheel.cancel(jobId);
      ctx()?.metrics.verify.inc({ outcome: 'delivered' });
    },
    pending: (jobId) => wheel.get(jobId) !== undefined,
    start() {
      if (o.enabled) wheel.start();
    },
    async stop() {
      stopped = true;
      wheel.stop();
      queue.length = 0;
      await Promise.allSettled([...inflight]);
    },
    probe,
    queued: () => queue.length,
  };
}
