// P244: the lifetime keeper, one leader `cordum:jobs:lifetime`. A job's keys get JOB_TTL when it
// is created (D45) and no write renews them, so a job that ran, or waited for a worker, longer
// than JOB_TTL lost its record in flight: its result was ignored as `unknown_job`, and the job
// was gone from every listing with no end state. Every eighth of the TTL (at least 5 s, at most
// an hour), the leader gives each live job with less than half the TTL left another TTL
// (JobStore.renewLive). A job is therefore looked at at least four times before its record
// could expire, a leader change included. Nothing is added to the job path.
import type { SchedulerContext } from './context';

export const LIFETIME_LOCK = 'cordum:jobs:lifetime';

/** How often the keeper runs for a job TTL. */
export function lifetimePeriodMs(jobTtlMs: number): number {
  return Math.min(3_600_000, Math.max(5_000, Math.floor(jobTtlMs / 8)));
}

export async function keepLifetimes(ctx: SchedulerContext): Promise<void> {
  const renewed = await ctx.store.renewLive();
  if (renewed === 0) return;
  ctx.metrics.lifetimesRenewed.inc(renewed);
  ctx.logger.info('live jobs older than half the job TTL renewed', { jobs: renewed, job_ttl_ms: ctx.config.jobTtlMs });
}
