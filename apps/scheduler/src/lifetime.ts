// P244: the lifetime keeper, one leader `cordum:jobs:lifetime`. A job's keys get JOB_TTL when it
// is created (D45) and no write renews them, so a job that ran, or waited for a worker, longer
// than JOB_TTL lost its record in flight: its result was ignored as `unknown_job`, and the job
// was gone from every listing with no end state. Every eighth of the TTL (at least 5 s, at most
// an hour), the leader gives each live job with less than half the TTL left another TTL
// (JobStore.renewLive). A job is therefore looked at at least four times before its record
// could expire, a leader change included. Nothing is added to the job path.
import { clusterNow, type RedisClient } from '@cordum/redis';
import type { SchedulerContext } from './context';

export const LIFETIME_LOCK = 'cordum:jobs:lifetime';
/**
 * When the last run ended (epoch ms, cluster time). Kept in Redis so that replicas restarting more
 * often than the period (an hour by default) do not each start the wait again and never run.
 */
export const LIFETIME_LAST_RUN_KEY = 'cordum:jobs:lifetime:last';

/** How often the keeper runs for a job TTL. */
export function lifetimePeriodMs(jobTtlMs: number): number {
  return Math.min(3_600_000, Math.max(5_000, Math.floor(jobTtlMs / 8)));
}

/** How often the leader looks whether a run is due: a restart delays a due run by at most this. */
export function lifetimeCheckMs(jobTtlMs: number): number {
  return Math.min(60_000, lifetimePeriodMs(jobTtlMs));
}

/**
 * One look: runs when the last run is a period old. A Redis with no last run (a new deployment, a
 * wiped one) gets one stamped now and the first run a period later, so a stack started on a
 * Redis full of jobs does not renew them all in its first minute.
 */
export async function keepLifetimes(ctx: SchedulerContext, redis: RedisClient): Promise<void> {
  const stamp = (): Promise<unknown> => redis.set(LIFETIME_LAST_RUN_KEY, String(clusterNow()), 'PX', 2 * ctx.config.jobTtlMs);
  const last = Number(await redis.get(LIFETIME_LAST_RUN_KEY));
  if (!Number.isFinite(last) || last <= 0) {
    await stamp();
    return;
  }
  if (clusterNow() - last < lifetimePeriodMs(ctx.config.jobTtlMs)) return;
  const renewed = await ctx.store.renewLive();
  await stamp();
  if (renewed === 0) return;
  ctx.metrics.lifetimesRenewed.inc(renewed);
  ctx.logger.info('live jobs older than half the job TTL renewed', { jobs: renewed, job_ttl_ms: ctx.config.jobTtlMs });
}
