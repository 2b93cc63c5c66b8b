// sys.job.cancel: the scheduler's durable (CONTRACT §3) beside the workers' core subscription.
// The gateway writes CANCELLED before it publishes its JobCancel (D5), so those find the job
// terminal and are acked. A JobCancel from any other CAP publisher (a workflow engine, a client on
// the bus) cancels the job here: CANCELLED under the job lock from whatever live state it is in
// (D12 allows it from every one), so no later submit, retry, replay or redispatch runs it.
// Workers hear the same JobCancel on their own subscription; the scheduler sends its own only for
// the attempt out when it cancelled (P63), never the gateway's again (D5).
import { ATTEMPT_OUT_STATES, CANCEL_OWED_AFTER_MS, TERMINAL_STATES, attemptCancelPacket, boundedError, cancelSent, jobCancelPacket, namesOtherAttempt, type JobRecord, type JobState } from '@cordum/job-store';
import { MAX_DELIVER, subjects } from '@cordum/bus';
import type { HandlerContext, HandlerOutcome } from '@cordum/bus';
import type { BusPacket, JobProgress } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import type { SchedulerContext } from './context';
import { BUSY_NAK_MS, lockedOutcome, releasedBy, withLockedJob } from './job-lock';
import { handOffFreedSlot } from './replayer';
import { errorText } from '@cordum/service-kit';

const ACK: HandlerOutcome = { kind: 'ack' };

/**
 * P134: the JobCancel for the attempt out is owed from before the write that ends the job (a
 * cancel from the bus, a reconciler TIMEOUT), so a replica killed after that write, or a publish
 * that fails, still gets the worker told by the replayer leader (sendOwedCancels).
 */
export async function oweCancel(ctx: SchedulerContext, job: JobRecord): Promise<void> {
  if (job.dispatch) await ctx.store.fileCancel(job.id, clusterNow() + CANCEL_OWED_AFTER_MS);
}

/**
 * Tells the worker of a job the scheduler just ended while an attempt was out (a cancel from the
 * bus, a reconciler TIMEOUT) to stop: the JobCancel for the current attempt. The msg id is the
 * gateway's for the same attempt (D9), so the stream drops a second one. A failed publish is
 * logged: the job's state is committed and its late result is ignored either way, the cancel is
 * owed (oweCancel) and sent by the replayer leader, and the worker's next progress for the
 * attempt gets the JobCancel again (stopEndedAttempt).
 */
export async function tellWorkerToStop(ctx: SchedulerContext, job: JobRecord, reason: string): Promise<void> {
  if (!job.dispatch) return;
  if (await publishCancel(ctx, job, reason)) await settleOwed(ctx, job);
}

/** The job's JobCancel on the bus; false (logged) when the publish failed. */
async function publishCancel(ctx: SchedulerContext, job: JobRecord, reason: string): Promise<boolean> {
  const { packet, msgId } = jobCancelPacket(job, { senderId: ctx.instanceId, reason, requestedBy: ctx.instanceId });
  try {
    await ctx.bus.publish(subjects.cancel, ctx.encodeForWorkers(packet), { msgId });
    return true;
  } catch (err) {
    ctx.logger.warn('JobCancel for the ended attempt not published; the replayer leader sends it once the bus is back, its result is ignored', { job_id: job.id, err: errorText(err) });
    return false;
  }
}

/**
 * A sent cancel stays owed, due again later, until its attempt answers (P135: cancelSent); left
 * due now on an error, it is sent once more at once, a duplicate the stream drops.
 */
async function settleOwed(ctx: SchedulerContext, job: JobRecord): Promise<void> {
  // Only called for a job the scheduler ended with an attempt out.
  await cancelSent(ctx.store, job, true).catch((err: unknown) => ctx.logger.warn('sent JobCancel not re-filed in the cancel outbox; sent again as a duplicate', { job_id: job.id, err: errorText(err) }));
}

/**
 * P135: the worker of a CANCELLED or TIMEOUT job's attempt answered it (a result naming that
 * attempt, or none): it has stopped, so its JobCancel is no longer owed.
 */
export async function cancelAnswered(ctx: SchedulerContext, job: JobRecord): Promise<void> {
  if (!OWED_STATES.has(job.state) || !job.dispatch) return;
  if (await ctx.store.removeCancel(job.id)) ctx.metrics.owedCancels.inc({ outcome: 'answered' });
}

/** Owed cancels handled per replayer turn. */
const OWED_LIMIT = 200;
/** An owed cancel whose publish failed is tried again this much later. */
export const OWED_RETRY_MS = 5_000;
const OWED_STATES: ReadonlySet<JobState> = new Set<JobState>(['CANCELLED', 'TIMEOUT']);

/**
 * P134, on the replayer leader's turn: every JobCancel owed past its due time is sent, read from
 * the record, for a job that is CANCELLED or TIMEOUT (the attempt its record names is the one
 * that ended). Its writer either died before publishing, could not publish (NATS away), or lost
 * only the re-filing (the stream drops the repeat: same msg id within the duplicate window). An
 * entry whose job is in any other state, or gone, is dropped: its cancel was never written (a
 * busy lock, a job that finished first), or the job ended by its own result. A failed publish is
 * tried again OWED_RETRY_MS later, and ends the turn's pass. The worker needs no progress or
 * keep-alive of its own for this, unlike P127's resend, so a CAP worker that sends none still
 * hears a cancel answered 200. P135: a sent one is due again later (cancelSent) until the
 * attempt answers or CANCEL_RESEND_WINDOW_MS has passed since the job ended, so a worker that
 * was cut off from NATS when one went out hears a later one.
 */
export async function sendOwedCancels(ctx: SchedulerContext, now: number): Promise<number> {
  const due = await ctx.store.listCancelsDue(now, OWED_LIMIT);
  let sent = 0;
  for (const e of due) {
    const job = await ctx.store.getJob(e.id);
    if (!job || !OWED_STATES.has(job.state)) {
      await ctx.store.removeCancel(e.id);
      ctx.metrics.owedCancels.inc({ outcome: 'not_needed' });
      continue;
    }
    if (!(await publishCancel(ctx, job, job.error?.message ?? `the job is ${job.state}`))) {
      // The bus is away (a publish spends up to its 2 s budget): the rest wait for the next turn
      // rather than holding the replayer for a budget each. XX: an answer that removed the entry
      // meanwhile keeps it removed.
      await ctx.store.deferCancel(e.id, clusterNow() + OWED_RETRY_MS);
      ctx.metrics.owedCancels.inc({ outcome: 'failed' });
      break;
    }
    // Its writer's record does not say whether an attempt was out then: the job's last one is taken to be.
    const again = await cancelSent(ctx.store, job, true);
    ctx.metrics.owedCancels.inc({ outcome: 'sent' });
    ctx.logger.info('owed JobCancel sent', { job_id: job.id, state: job.state, late_ms: now - e.score, ended_ms_ago: now - (job.finishedAt ?? job.updatedAt), last: !again });
    sent += 1;
  }
  return sent;
}

/** How often one attempt's JobCancel may be sent again (stopEndedAttempt). */
export const RESEND_EVERY_MS = 1_000;
/** Attempts remembered by that bound; past this many the oldest is forgotten. */
const RESEND_MEMORY = 10_000;

/** `take(key)`: true at most once per RESEND_EVERY_MS per key. */
const resends = (() => {
  const last = new Map<string, number>();
  return {
    take(key: string): boolean {
      const now = clusterNow();
      const at = last.get(key);
      if (at !== undefined && now - at < RESEND_EVERY_MS) return false;
      last.delete(key);
      last.set(key, now);
      if (last.size > RESEND_MEMORY) last.delete(last.keys().next().value as string);
      return true;
    },
  };
})();

/**
 * A worker's progress named an attempt that has ended (the job is terminal, or its current attempt
 * is another one), so the JobCancel meant for that attempt never reached it: the publish failed
 * (NATS away at the gateway's cancel or at a timeout, P52), or the worker was cut off when it was
 * sent (a core message is not kept). Worker-sdk repeats a running job's progress every heartbeat,
 * so the attempt gets its JobCancel again within one heartbeat of NATS being back (P127), and a
 * handler that ignores it gives its slot back after the SDK's cancel grace (P108). The cancel
 * names the progress's attempt, so a worker running a later attempt of the job is not stopped by
 * it, and the schedulers' own consumer ignores it (the job is terminal, or the attempt stale). Its
 * msg id is the attempt's cancel id (D9): the stream keeps one, every worker still hears each.
 */
export async function stopEndedAttempt(ctx: SchedulerContext, p: JobProgress, state: JobState): Promise<void> {
  const dispatchId = p.dispatch?.dispatchId ?? '';
  // At most one per attempt per RESEND_EVERY_MS from this replica: a worker that keeps reporting
  // progress of an ended attempt (not worker-sdk, which stops once it hears the cancel) costs a
  // JetStream publish and a broadcast to every worker each time.
  if (!resends.take(`${p.jobId}\n${dispatchId}`)) return;
  const reason = TERMINAL_STATES.has(state) ? `the job is ${state}` : `attempt ${dispatchId} was replaced`;
  const { packet, msgId } = attemptCancelPacket(p.jobId, p.dispatch, { senderId: ctx.instanceId, reason, requestedBy: ctx.instanceId });
  ctx.metrics.endedAttemptCancels.inc();
  try {
    await ctx.bus.publish(subjects.cancel, ctx.encodeForWorkers(packet), { msgId });
    ctx.logger.debug('JobCancel sent to a worker running an ended attempt', { job_id: p.jobId, dispatch_id: dispatchId, worker_id: p.dispatch?.assignedWorkerId, state });
  } catch (err) {
    ctx.logger.warn('JobCancel for an ended attempt not published; sent again at its next progress', { job_id: p.jobId, dispatch_id: dispatchId, err: errorText(err) });
  }
}

function ignore(ctx: SchedulerContext, reason: string, jobId: string): HandlerOutcome {
  ctx.metrics.ignored.inc({ kind: 'cancel', reason });
  ctx.logger.debug('cancel ignored', { job_id: jobId, reason });
  return ACK;
}

export function cancelHandler(ctx: SchedulerContext) {
  return async (packet: BusPacket, h: HandlerContext): Promise<HandlerOutcome> => {
    if (packet.payload.case !== 'jobCancel' || !packet.payload.value.jobId) {
      ctx.metrics.ignored.inc({ kind: 'cancel', reason: 'not_a_job_cancel' });
      return { kind: 'term', reason: 'cancel packet without a JobCancel' };
    }
    const cancel = packet.payload.value;
    // The gateway's cancels (nearly all) find the job CANCELLED already, and the gateway may still
    // hold the lock while it publishes: a lock-free read acks them without a busy NAK round.
    const seen = await ctx.store.getJob(cancel.jobId);
    if (!seen) return ignore(ctx, 'unknown_job', cancel.jobId);
    if (TERMINAL_STATES.has(seen.state)) {
      if (seen.state === 'CANCELLED') {
        // The gateway's cancel of a job that held a concurrency slot freed it: its group's next waiter goes now (P70).
        await handOffFreedSlot(ctx, seen);
        // D45: the gateway's CANCELLED write does not expire the job's result key; a worker may
        // have written it before it heard the cancel. Idempotent, like a redelivered result's.
        await ctx.store.expireResult(seen);
      }
      return ignore(ctx, 'terminal', seen.id);
    }
    // A cancel for an attempt that is not the job's current one (P127's resends of an ended
    // attempt's cancel) needs no lock: an attempt id is written before anyone can name it, and a
    // later attempt gets a new one.
    if (namesOtherAttempt(cancel.dispatch, seen)) return ignore(ctx, 'stale_dispatch', seen.id);
    let cancelled: JobRecord | undefined; // written here, under the lock; its slot is handed off after the lock is gone
    const r = await withLockedJob(ctx, cancel.jobId, async (lease, job): Promise<HandlerOutcome> => {
      if (!job) return ignore(ctx, 'unknown_job', cancel.jobId);
      if (TERMINAL_STATES.has(job.state)) return ignore(ctx, 'terminal', job.id);
      // A cancel for one attempt (as worker-sdk reads it) does not end a later one.
      if (namesOtherAttempt(cancel.dispatch, job)) return ignore(ctx, 'stale_dispatch', job.id);
      const by = cancel.requestedBy || packet.senderId;
      const message = cancel.reason || `cancelled on the bus${by ? ` by ${by}` : ''}`;
      // An attempt is out: its worker must hear the cancel (owed first, P134; sent below).
      const attemptOut = ATTEMPT_OUT_STATES.has(job.state);
      if (attemptOut) await oweCancel(ctx, job);
      // D45 like every terminal write: the job's result key (a worker may have written it before the cancel) gets the job TTL.
      const w = releasedBy(lease, await ctx.store.transition(job.id, 'CANCELLED', { token: lease.token, from: [job.state], current: job, release: true, expireResult: true, patch: { error: boundedError('cancelled', message) } }));
      if (!w.ok) return w.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : ignore(ctx, w.reason, job.id);
      ctx.metrics.cancelsApplied.inc();
      ctx.logger.info('job cancelled from sys.job.cancel', { job_id: job.id, from: job.state, requested_by: by, sender: packet.senderId });
      // The attempt out now may have been dispatched after the cancel was published, so its worker
      // never heard it: send the JobCancel for this attempt (an exception to D5's one cancel).
      if (attemptOut) await tellWorkerToStop(ctx, w.job, message);
      cancelled = w.job;
      return ACK;
    });
    if (cancelled) await handOffFreedSlot(ctx, cancelled);
    const outcome = lockedOutcome(r, h.deliveryCount);
    // Results have the reconciler behind them; a cancel has nothing: say so before it is dropped.
    if (outcome.kind === 'nak' && h.deliveryCount >= MAX_DELIVER) {
      ctx.logger.error('JobCancel dropped after its last delivery (job lock busy throughout); the job was not cancelled: cancel it again', { job_id: cancel.jobId, deliveries: h.deliveryCount });
    }
    return outcome;
  };
}
