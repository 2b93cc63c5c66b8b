// sys.job.progress (core queue group `cordum-scheduler`, D40): the first
// progress or start ack of the current dispatch moves DISPATCHED → RUNNING.
// Progress is best effort: a busy lock or a lost message is fine because
// worker-sdk repeats progress every heartbeat and the result also ends the job.
import { decodePacket, type JobProgress } from '@cordum/protocol';
import type { SchedulerContext } from './context';
import { withJobLock } from './job-lock';

export async function applyProgress(ctx: SchedulerContext, p: JobProgress): Promise<void> {
  if (!p.jobId) return;
  // Cheap pre-check without the lock: most progress messages are for RUNNING jobs.
  const peek = await ctx.store.getJob(p.jobId);
  if (!peek || peek.state !== 'DISPATCHED') return;
  await withJobLock(ctx, p.jobId, async (lease) => {
    const job = await ctx.store.getJob(p.jobId);
    if (!job || job.state !== 'DISPATCHED') return;
    if (p.dispatch?.dispatchId && p.dispatch.dispatchId !== job.dispatch?.dispatchId) {
      ctx.metrics.ignored.inc({ kind: 'progress', reason: 'stale_dispatch' });
      return;
    }
    await ctx.store.transition(job.id, 'RUNNING', { token: lease.token, from: ['DISPATCHED'] });
  });
}

/** Decodes and applies, tracking in-flight work so stop() can drain it. */
export function progressListener(ctx: SchedulerContext, inflight: Set<Promise<void>>) {
  return (data: Uint8Array): void => {
    let p: JobProgress;
    try {
      const packet = decodePacket(data);
      if (packet.payload.case !== 'jobProgress') return;
      p = packet.payload.value;
    } catch {
      ctx.metrics.decodeErrors.inc({ subject: 'sys.job.progress' });
      return;
    }
    const run = applyProgress(ctx, p)
      .catch((err: unknown) => ctx.logger.warn('progress handling failed', { job_id: p.jobId, err }))
      .finally(() => inflight.delete(run));
    inflight.add(run);
  };
}
