// The JobCancel a job's worker acts on (CONTRACT §3, D5): the job id, why, who asked, and the
// attempt it is for, so a worker running a later attempt is not stopped by it. Published on
// sys.job.cancel with msg id `sys.job.cancel:<job_id>:<dispatch_id|none>` (D9), so a second
// cancel of the same attempt, from any service, is a duplicate the stream drops.
import { subjects } from '@cordum/bus';
import { create, JobCancelSchema, newPacket, type BusPacket, type DispatchIdentitySchema, type MessageInitShape } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import type { JobScans } from './scans';
import type { JobRecord } from './types';

/**
 * P134: how long after a cancel (or TIMEOUT) is filed in `job:cancel:outbox` the schedulers send
 * its JobCancel themselves, unless the writer's own publish re-filed the entry first (cancelSent).
 * Past the gateway's cancel (lock ≤ 2 s, D5, the write, a publish bounded by the bus's timeout),
 * and well within JetStream's duplicate window, so a publish that did go out and only lost its
 * re-filing is sent again under the same msg id and dropped by the stream.
 */
export const CANCEL_OWED_AFTER_MS = 10_000;

/**
 * P135: how long after a job ended CANCELLED or TIMEOUT its JobCancel is still sent again while the
 * attempt's worker has not answered. A worker cut off from NATS when a cancel went out never hears
 * that one (a core message is not kept), and one that sends no progress gets no P127 resend.
 */
export const CANCEL_RESEND_WINDOW_MS = 10 * 60_000;

/**
 * P135: when the JobCancel just sent for `job` (ended at `finishedAt`) goes out again unless its
 * attempt answers first: after as long as the job has been over, and at least
 * CANCEL_OWED_AFTER_MS (about 10, 20, 40 … s after the end: seven sends in all), or null when
 * that would be past CANCEL_RESEND_WINDOW_MS (this send was the last).
 */
export function nextCancelResend(job: Pick<JobRecord, 'finishedAt' | 'updatedAt'>, nowMs: number): number | null {
  const age = Math.max(0, nowMs - (job.finishedAt ?? job.updatedAt));
  const wait = Math.max(CANCEL_OWED_AFTER_MS, age);
  return age + wait > CANCEL_RESEND_WINDOW_MS ? null : nowMs + wait;
}

/**
 * P135: a JobCancel for `job` is on the bus. While an attempt was out when the job ended, its
 * outbox entry, if still there (the attempt has not answered), is due again at nextCancelResend,
 * or removed once past the window; with none out (a cancel of a PENDING job, say) it is removed.
 * true when the cancel stays owed.
 */
export async function cancelSent(store: Pick<JobScans, 'deferCancel' | 'removeCancel'>, job: JobRecord, attemptOut: boolean, nowMs = clusterNow()): Promise<boolean> {
  const next = attemptOut && job.dispatch ? nextCancelResend(job, nowMs) : null;
  if (next === null) {
    await store.removeCancel(job.id);
    return false;
  }
  await store.deferCancel(job.id, next);
  return true;
}

export function cancelMsgId(jobId: string, dispatchId: string | undefined): string {
  return `${subjects.cancel}:${jobId}:${dispatchId || 'none'}`;
}

/** The JobCancel packet for the job's current attempt, and its msg id. */
export function jobCancelPacket(job: JobRecord, o: { senderId: string; reason: string; requestedBy: string }): { packet: BusPacket; msgId: string } {
  const d = job.dispatch;
  const attempt = d ? { dispatchId: d.dispatchId, attempt: BigInt(d.attempt), assignedWorkerId: d.workerId ?? '' } : undefined;
  return attemptCancelPacket(job.id, attempt, { ...o, traceId: job.traceId });
}

/** The JobCancel packet for attempt `attempt` of job `jobId` (none: any attempt), and its msg id. */
export function attemptCancelPacket(
  jobId: string,
  attempt: MessageInitShape<typeof DispatchIdentitySchema> | undefined,
  o: { senderId: string; reason: string; requestedBy: string; traceId?: string },
): { packet: BusPacket; msgId: string } {
  const value = create(JobCancelSchema, { jobId, reason: o.reason, requestedBy: o.requestedBy, dispatch: attempt });
  return { packet: newPacket(o.senderId, { case: 'jobCancel', value }, o.traceId || undefined), msgId: cancelMsgId(jobId, attempt?.dispatchId) };
}
