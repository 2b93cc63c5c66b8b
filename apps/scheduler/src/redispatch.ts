// D1 (b): replacing an attempt that provably never started. Shared by the
// delivery verifier (after the verify delay) and the reconciler (past the
// dispatch timeout). The proof is two-fold: the job is still DISPATCHED on the
// same dispatch (no start ack moved it to RUNNING) and worker-sdk has not
// claimed that dispatch (checked atomically with the new write in Redis).
import type { JobRecord } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import type { SchedulerContext } from './context';
import { dispatch, pastDeadline } from './dispatch';
import { readLocked, withJobLock } from './job-lock';
import { withReservedRoute } from './route-job';

export type ReattemptResult =
  /** a new attempt was published */
  | 'redispatched'
  /** the old attempt was claimed by a worker: it started; the job moved to RUNNING */
  | 'started'
  /** the job moved on meanwhile (acked, finished, another dispatch) */
  | 'moved'
  /** no attempts left, or no worker to send it to: left to the reconciler */
  | 'exhausted'
  | 'no_route'
  /** the job's deadline_ms has passed: no new attempt (D46); the reconciler's deadline pass ends it TIMEOUT */
  | 'past_deadline'
  /** the job lock was busy or was lost mid-way */
  | 'busy'
  | 'error';

/** Attempts that count against maxAttempts: a `worker_busy` refusal is backpressure, not an attempt (D48). */
export function attemptsUsed(job: JobRecord): number {
  return job.attempts - (job.busyRefusals ?? 0);
}

export async function reattemptLocked(ctx: SchedulerContext, lease: Lease, job: JobRecord, dispatchId: string): Promise<ReattemptResult> {
  if (job.state !== 'DISPATCHED' || job.dispatch?.dispatchId !== dispatchId) return 'moved';
  if (attemptsUsed(job) >= (job.maxAttempts ?? ctx.config.maxAttempts)) return 'exhausted';
  if (pastDeadline(job)) return 'past_deadline';
  const out = await withReservedRoute(ctx, job, job.dispatch.workerId, (route, reserved) =>
    route.kind === 'worker' || route.kind === 'untracked' ? dispatch(ctx, lease, job, route, { reserved }) : Promise.resolve(null),
  );
  if (out === null) return 'no_route';
  switch (out.kind) {
    case 'dispatched':
      // The old attempt was provably never claimed: route new jobs around its worker (P34).
      if (ctx.workers.noteUnclaimed(job.dispatch.workerId, job.dispatchedAt ?? job.updatedAt)) {
        const silent = ctx.workers.get(job.dispatch.workerId ?? '')?.unclaimedSilent === true;
        ctx.logger.warn(`worker did not claim a dispatch: routed around while others have room, until it answers one${silent ? ' or heartbeats again' : ''}`, { worker_id: job.dispatch.workerId, job_id: job.id, silent });
      }
      return 'redispatched';
    case 'started': {
      // The ack was lost or is late; the claim proves the start, so the running timeout applies now.
      await ctx.store.transition(job.id, 'RUNNING', { token: lease.token, from: ['DISPATCHED'] });
      return 'started';
    }
    case 'stale':
      return 'moved';
    case 'lost':
      return 'busy';
    case 'past_deadline':
      return 'past_deadline';
  }
}

export async function driveRedispatch(ctx: SchedulerContext, jobId: string, dispatchId: string, why: string): Promise<ReattemptResult> {
  try {
    const r = await withJobLock(ctx, jobId, async (lease) => {
      const job = await readLocked(ctx, jobId);
      return job ? reattemptLocked(ctx, lease, job, dispatchId) : 'moved';
    });
    return r.busy ? 'busy' : r.value;
  } catch (err) {
    ctx.logger.warn('redispatch failed', { job_id: jobId, why, err });
    return 'error';
  }
}
