// Pending replayer (BEHAVIOURS §1.8, D8, D13), one leader `cordum:replayer:pending`.
// Each turn (SCHEDULER_REPLAY_INTERVAL):
//   1. due `job:retry` entries (no-worker waits, RETRYING backoffs) are driven
//      through the normal intake/dispatch path under the job lock;
//   2. PENDING / SCHEDULED / RETRYING jobs older than SCHEDULER_PENDING_REPLAY_AGE
//      with no retry entry are orphans: a lost submit, a submit whose message
//      ran out of deliveries (D8), an owner that died between two writes. They
//      are driven directly (no republish: JetStream's duplicate window would
//      swallow a republish with the same D9 msg id) and counted in
//      `cordum_scheduler_orphan_replayed_total`.
// An outcome that asks to retry later (NAK) re-files the job in `job:retry`.
import type { HandlerOutcome } from '@cordum/bus';
import type { JobState, ScoredId } from '@cordum/job-store';
import type { SchedulerContext } from './context';
import { forEachLimit } from './for-each';
import { driveJob } from './intake';
import { withJobLock } from './job-lock';

const LIMIT = 200;
const CONCURRENCY = 16;
const ORPHAN_STATES: JobState[] = ['PENDING', 'SCHEDULED', 'RETRYING'];

export async function replayOnce(ctx: SchedulerContext): Promise<{ retried: number; orphans: number }> {
  const now = Date.now();
  const due = await ctx.store.listRetryDue(now, LIMIT);
  let retried = 0;
  await forEachLimit(due, CONCURRENCY, async (e) => {
    // Removed first: if we die mid-drive, the orphan sweep below still finds the job.
    await ctx.store.removeRetry(e.id);
    if (await drive(ctx, e.id, null)) {
      retried += 1;
      ctx.metrics.orphanReplayed.inc({ reason: 'retry' });
    }
  });
  let orphans = 0;
  for (const state of ORPHAN_STATES) {
    const old = await ctx.store.listActive(state, now - ctx.config.replay.pendingAgeMs, LIMIT);
    await forEachLimit(old, CONCURRENCY, async (e: ScoredId) => {
      if (await ctx.store.hasRetry(e.id)) {
        // A timed wait, not an orphan. Move it to the back of the index so a long queue of
        // waiting jobs never hides real orphans behind the scan LIMIT (a job that moved on
        // meanwhile gets a stale entry here, which the next look repairs).
        await ctx.store.reindex(e.id, state, state, Date.now());
        return;
      }
      if (await drive(ctx, e.id, state)) {
        orphans += 1;
        ctx.metrics.orphanReplayed.inc({ reason: 'lost' });
        ctx.logger.info('orphan job replayed', { job_id: e.id, state });
      }
    });
  }
  return { retried, orphans };
}

/** true when the job was found in a drivable state and driven. */
async function drive(ctx: SchedulerContext, id: string, seenIn: JobState | null): Promise<boolean> {
  try {
    const r = await withJobLock(ctx, id, async (lease) => {
      const job = await ctx.store.getJob(id);
      if (seenIn && (!job || job.state !== seenIn)) {
        await ctx.store.reindex(id, seenIn, job?.state ?? null, job?.updatedAt ?? Date.now());
        return false;
      }
      if (!job || !ORPHAN_STATES.includes(job.state)) return false;
      const out: HandlerOutcome = await driveJob(ctx, lease, job);
      if (out.kind === 'nak') await ctx.store.scheduleRetry(id, Date.now() + (out.delayMs ?? 1000));
      // The job was touched: refresh its orphan clock so it is not re-driven every turn.
      const after = await ctx.store.getJob(id);
      if (after && after.state === job.state) await ctx.store.reindex(id, job.state, job.state, Date.now());
      return true;
    });
    if (r.busy) {
      await ctx.store.scheduleRetry(id, Date.now() + 1000);
      return false;
    }
    return r.value;
  } catch (err) {
    ctx.logger.warn('replay failed', { job_id: id, err });
    await ctx.store.scheduleRetry(id, Date.now() + 5000).catch(() => undefined);
    return false;
  }
}
