// The gateway's `sys.job.dlq` consumer (CONTRACT §3: durable `cordum-gateway`,
// one replica per notice; D14 "DLQ write dedup"). Our own services write the
// DLQ entry before they publish the notice, so here the write is a no-op
// (`present`); a notice whose entry is missing (another publisher, a CAP
// component reporting a job that failed) gets the entry filed (`filed`) as
// long as the job's record is in a DLQ state. The consumer never changes a
// job's state: a notice for a job that is not FAILED, DENIED or TIMEOUT, or
// that Redis does not know, is counted and acked.
import { subjects, type Bus, type Consumer, type HandlerOutcome } from '@cordum/bus';
import { DLQ_STATES, type JobStore } from '@cordum/job-store';
import { decodeValidPacket, type BusPacket } from '@cordum/protocol';
import { isRedisUnavailable, isSlotMoving } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { Counter, type Registry } from 'prom-client';
import { errorText } from '@cordum/service-kit';

export const DLQ_CONSUMER_QUEUE = 'cordum-gateway';
/** Redis unreachable: the notice comes back after this long. */
const RETRY_MS = 1_000;

export const DLQ_NOTICE_OUTCOMES = ['present', 'filed', 'unknown_job', 'not_dlq_state'] as const;
export type DlqNoticeOutcome = (typeof DLQ_NOTICE_OUTCOMES)[number];

export function dlqNoticeHandler(o: { store: JobStore; logger: Logger; counted: (outcome: DlqNoticeOutcome) => void }) {
  return async (packet: BusPacket): Promise<HandlerOutcome> => {
    if (packet.payload.case !== 'jobResult' || !packet.payload.value.jobId) return { kind: 'term', reason: 'dlq notice without a JobResult' };
    const notice = packet.payload.value;
    let outcome: DlqNoticeOutcome;
    try {
      const job = await o.store.getJob(notice.jobId);
      if (!job) outcome = 'unknown_job';
      else if (!DLQ_STATES.has(job.state)) outcome = 'not_dlq_state';
      else outcome = (await o.store.writeDlq(job, notice.errorMessage || undefined, { notify: false })) ? 'filed' : 'present';
    } catch (err) {
      o.logger.warn('dlq notice not applied, will retry', { job_id: notice.jobId, err: errorText(err) });
      return { kind: 'nak', delayMs: RETRY_MS };
    }
    o.counted(outcome);
    if (outcome === 'filed') o.logger.info('dlq entry filed from a notice', { job_id: notice.jobId, sender: packet.senderId, reason_code: notice.errorCode });
    else if (outcome !== 'present') o.logger.warn('dlq notice ignored', { job_id: notice.jobId, sender: packet.senderId, outcome });
    return { kind: 'ack' };
  };
}

export function startDlqNoticeConsumer(o: { bus: Bus; store: JobStore; logger: Logger; registry: Registry }): Promise<Consumer> {
  const notices = new Counter({
    name: 'cordum_dlq_notices_total',
    help: 'sys.job.dlq notices this replica consumed, by outcome (present: entry already written, or deleted by an operator; filed: written from the notice)',
    labelNames: ['outcome'],
    registers: [o.registry],
  });
  // P296: each outcome exported from 0, or the first `filed` notice made its series appear at 1,
  // and CordumUnexpectedDlqNotices (increase() over 15 m) missed it.
  for (const outcome of DLQ_NOTICE_OUTCOMES) notices.inc({ outcome }, 0);
  return o.bus.consume({
    stream: 'CORDUM_SYS',
    subject: subjects.dlq,
    queue: DLQ_CONSUMER_QUEUE,
    // P328: held to CAP's rules as every other consumer (P57): a packet of another protocol
    // version, without a trace id or with a job id off the pattern is terminated, not applied.
    // Not signature-checked: our own services publish these notices unsigned (D42 signs workers').
    decode: decodeValidPacket,
    handler: dlqNoticeHandler({ store: o.store, logger: o.logger, counted: (outcome) => notices.inc({ outcome }) }),
    concurrency: 16,
    unavailable: isRedisUnavailable,
    retryInPlace: isSlotMoving,
  });
}
