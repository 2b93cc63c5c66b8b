// sys.job.progress (core queue group `cordum-scheduler`, D40): the first
// progress or start ack of the current dispatch moves DISPATCHED → RUNNING.
// Progress is best effort: a busy lock or a lost message is fine because
// worker-sdk repeats progress every heartbeat and the result also ends the job.
// A progress for an attempt that has ended gets that attempt's JobCancel again (P127).
import { ENDED_BY_OTHERS, jobKeys } from '@cordum/job-store';
import { redisFailureKind, throttleFailures } from '@cordum/redis';
import { stopEndedAttempt } from './cancels';
import type { JobProgress } from '@cordum/protocol';
import type { SchedulerContext } from './context';

/** Pause between tries while a handler holds the job lock (the lock wait budget bounds the total). */
const BUSY_RETRY_MS = 10;

export async function applyProgress(ctx: SchedulerContext, p: JobProgress): Promise<void> {
  if (!p.jobId) return;
  // One atomic script, taken only while no handler holds the job lock (mark-running-2.lua): most
  // progress messages are for jobs already RUNNING, and those cost one round trip and no write.
  const deadline = Date.now() + ctx.config.lockWaitMs;
  for (;;) {
    const r = await ctx.store.markRunning(p.jobId, p.dispatch?.dispatchId ?? '');
    if (r.ok && r.job.dispatch) {
      ctx.verifier.delivered(p.jobId, r.job.dispatch.dispatchId);
      ctx.workers.noteAnswered(r.job.dispatch.workerId);
    }
    if (r.ok || r.reason !== 'busy') {
      if (!r.ok && r.reason === 'stale_dispatch') ctx.metrics.ignored.inc({ kind: 'progress', reason: 'stale_dispatch' });
      // The worker runs an attempt that has ended and was not told (P127): tell it again.
      if (!r.ok && (r.reason === 'stale_dispatch' || (r.reason === 'state_mismatch' && ENDED_BY_OTHERS.has(r.state)))) await stopEndedAttempt(ctx, p, r.state);
      return;
    }
    // The intake handler is typically still marking the attempt published: it ends within ms,
    // and when it runs in this process its release wakes us at once (locks.whenReleased).
    if (Date.now() >= deadline) return;
    await ctx.locks.whenReleased(jobKeys.lock(p.jobId), BUSY_RETRY_MS * (0.5 + Math.random()));
  }
}

/** Decodes and applies, tracking in-flight work so stop() can drain it. */
export function progressListener(ctx: SchedulerContext, inflight: Set<Promise<void>>) {
  // worker-sdk repeats every running job's progress each heartbeat, so a Redis outage fails them
  // all: one line per kind of failure per 30 s, with the count of those not logged (P162), as the
  // leader loops do (P100).
  let failedJob = '';
  const failures = throttleFailures((err, suppressed) => ctx.logger.warn('progress handling failed', { job_id: failedJob, err, ...(suppressed > 0 ? { suppressed } : {}) }), {
    kindOf: redisFailureKind,
  });
  return (data: Uint8Array): void => {
    let p: JobProgress;
    try {
      const packet = ctx.decodeWorkerPacket(data);
      if (packet.payload.case !== 'jobProgress') return;
      p = packet.payload.value;
    } catch {
      ctx.metrics.decodeErrors.inc({ subject: 'sys.job.progress' });
      return;
    }
    const run = applyProgress(ctx, p)
      .catch((err: unknown) => {
        failedJob = p.jobId;
        failures.failed(err instanceof Error ? err : new Error(String(err)));
      })
      .finally(() => inflight.delete(run));
    inflight.add(run);
  };
}
