// The JobCancel a job's worker acts on (CONTRACT §3, D5): the job id, why, who asked, and the
// attempt it is for, so a worker running a later attempt is not stopped by it. Published on
// sys.job.cancel with msg id `sys.job.cancel:<job_id>:<dispatch_id|none>` (D9), so a second
// cancel of the same attempt, from any service, is a duplicate the stream drops.
import { subjects } from '@cordum/bus';
import { create, JobCancelSchema, newPacket, type BusPacket } from '@cordum/protocol';
import type { JobRecord } from './types';

export function cancelMsgId(jobId: string, dispatchId: string | undefined): string {
  return `${subjects.cancel}:${jobId}:${dispatchId || 'none'}`;
}

/** The JobCancel packet for the job's current attempt, and its msg id. */
export function jobCancelPacket(job: JobRecord, o: { senderId: string; reason: string; requestedBy: string }): { packet: BusPacket; msgId: string } {
  const d = job.dispatch;
  const value = create(JobCancelSchema, {
    jobId: job.id,
    reason: o.reason,
    requestedBy: o.requestedBy,
    dispatch: d ? { dispatchId: d.dispatchId, attempt: BigInt(d.attempt), assignedWorkerId: d.workerId ?? '' } : undefined,
  });
  return { packet: newPacket(o.senderId, { case: 'jobCancel', value }, job.traceId || undefined), msgId: cancelMsgId(job.id, d?.dispatchId) };
}
