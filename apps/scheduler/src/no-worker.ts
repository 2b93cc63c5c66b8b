// D13 no-worker wait: count a schedule try, file the job's next look in
// `job:retry` (1 s·2ⁿ ≤ 30 s ±20 %), and give up after the bound (50 tries or
// 10 min) with FAILED + DLQ `no_workers`. The replayer leader drains
// `job:retry`, so the timer survives the death of the replica that set it.
import type { HandlerOutcome } from '@cordum/bus';
import type { JobRecord } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import { backoffMs } from './backoff';
import type { SchedulerContext } from './context';
import { BUSY_NAK_MS } from './job-lock';

export async function noWorkerWait(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<HandlerOutcome> {
  if (job.state !== 'PENDING' && job.state !== 'RETRYING') return { kind: 'ack' };
  const tries = (job.scheduleTries ?? 0) + 1;
  const waited = Date.now() - job.createdAt;
  const { maxScheduleTries, maxScheduleWaitMs } = ctx.config.replay;
  if (tries > maxScheduleTries || waited >= maxScheduleWaitMs) {
    ctx.logger.warn('no worker within the bound, failing job', { job_id: job.id, topic: job.topic, tries: tries - 1, waited_ms: waited });
    const w = await ctx.store.transition(job.id, 'FAILED', {
      token: lease.token,
      from: [job.state],
      patch: { scheduleTries: tries - 1, error: { code: 'no_workers', message: `no worker for ${job.topic} after ${tries - 1} tries` } },
    });
    return w.ok || w.reason !== 'fenced' ? { kind: 'ack' } : { kind: 'nak', delayMs: BUSY_NAK_MS };
  }
  const p = await ctx.store.patchJob(job.id, job.state, { token: lease.token, patch: { scheduleTries: tries } });
  if (!p.ok) return p.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : { kind: 'ack' };
  await ctx.store.scheduleRetry(job.id, Date.now() + backoffMs(tries - 1));
  ctx.logger.info('no worker for topic, job waits', { job_id: job.id, topic: job.topic, tries });
  return { kind: 'ack' };
}
