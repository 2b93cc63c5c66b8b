// The `sys.job.dlq` notification (CONTRACT §3, D14): a JobResult with
// error_code = the entry's reason code, published on CORDUM_SYS after each DLQ
// write by whichever service made it. The entry in Redis is the record; the
// notice only tells listeners (the gateway's consumer, an operator's alerting
// consumer on the stream) that it exists.
import { subjects, type Bus, type BusLogger } from '@cordum/bus';
import { create, DispatchIdentitySchema, encodePacket, JobResultSchema, newPacket, type BusPacket } from '@cordum/protocol';
import type { DlqEntry, JobRecord } from './types';
import { STATE_STATUS } from './wire';

/** D9-style id, so a re-run of the same DLQ write (a redelivered result) is dropped by JetStream's duplicate window. */
export function dlqMsgId(job: Pick<JobRecord, 'id' | 'dispatch'>): string {
  return `${subjects.dlq}:${job.id}:${job.dispatch?.dispatchId ?? ''}`;
}

export function dlqPacket(senderId: string, job: JobRecord, entry: DlqEntry): BusPacket {
  const d = job.dispatch;
  return newPacket(
    senderId,
    {
      case: 'jobResult',
      value: create(JobResultSchema, {
        jobId: job.id,
        status: STATE_STATUS[job.state],
        resultPtr: job.resultPtr ?? '',
        workerId: job.workerId ?? '',
        errorCode: entry.reason_code,
        errorMessage: entry.reason,
        ...(d ? { dispatch: create(DispatchIdentitySchema, { dispatchId: d.dispatchId, attempt: BigInt(d.attempt), assignedWorkerId: d.workerId ?? '' }) } : {}),
      }),
    },
    job.traceId || undefined,
  );
}

/**
 * A `JobStoreOptions.onDlq` hook that publishes the notice. It does not wait for the publish:
 * a failure (NATS away) is logged, and the next re-run of the write (a redelivery) publishes
 * again under the same message id.
 */
export function dlqNotifier(o: { bus: Pick<Bus, 'connected' | 'publish'>; senderId: string; logger: BusLogger }): (job: JobRecord, entry: DlqEntry) => void {
  return (job, entry) => {
    if (!o.bus.connected) {
      o.logger.warn('dlq notice not published: bus disconnected', { job_id: job.id });
      return;
    }
    o.bus.publish(subjects.dlq, encodePacket(dlqPacket(o.senderId, job, entry)), { msgId: dlqMsgId(job) }).catch((err: unknown) => {
      o.logger.warn('dlq notice not published', { job_id: job.id, err: err instanceof Error ? err.message : String(err) });
    });
  };
}
