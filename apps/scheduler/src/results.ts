// sys.job.result handler (BEHAVIOURS §1.5, D12 status mapping), under the job lock.
import { createHash } from 'node:crypto';
import { ATTEMPT_OUT_STATES, boundedError, ENDED_BY_OTHERS, namesOtherAttempt, ownOutputKeys, TERMINAL_STATES, type JobPatch, type JobRecord, type JobState } from '@cordum/job-store';
import type { HandlerContext, HandlerOutcome } from '@cordum/bus';
import { encodeForSigning, JobStatus, type BusPacket, type JobResult } from '@cordum/protocol';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import { backoffMs } from './backoff';
import type { SchedulerContext } from './context';
import { BUSY_NAK_MS, lockedOutcome, releasedBy, withLockedJob } from './job-lock';
import { cancelAnswered } from './cancels';
import { handOffCapacity, handOffFreedSlot } from './replayer';
import { attemptsUsed } from './redispatch';
import { pastDeadline } from './dispatch';

const ACK: HandlerOutcome = { kind: 'ack' };

type Mapped = { to: JobState; retryable?: boolean } | null;

/** D12: 5→SUCCEEDED, 6/11→FAILED, 10→RETRYING (or FAILED when spent), 7→CANCELLED, 9→TIMEOUT, 0–4 ignored. */
export function mapStatus(status: JobStatus): Mapped {
  switch (status) {
    case JobStatus.SUCCEEDED:
      return { to: 'SUCCEEDED' };
    case JobStatus.FAILED:
    case JobStatus.FAILED_FATAL:
      return { to: 'FAILED' };
    case JobStatus.FAILED_RETRYABLE:
      return { to: 'RETRYING', retryable: true };
    case JobStatus.CANCELLED:
      return { to: 'CANCELLED' };
    case JobStatus.TIMEOUT:
      return { to: 'TIMEOUT' };
    case JobStatus.UNSPECIFIED:
    case JobStatus.PENDING:
    case JobStatus.SCHEDULED:
    case JobStatus.DISPATCHED:
    case JobStatus.RUNNING:
    case JobStatus.DENIED:
      return null;
  }
  return null;
}

export function resultHandler(ctx: SchedulerContext) {
  return async (packet: BusPacket, h: HandlerContext): Promise<HandlerOutcome> => {
    if (packet.payload.case !== 'jobResult' || !packet.payload.value.jobId) {
      ctx.metrics.ignored.inc({ kind: 'result', reason: 'not_a_job_result' });
      return { kind: 'term', reason: 'result packet without a JobResult' };
    }
    const res = packet.payload.value;
    const sig = replayKey(ctx, packet, res);
    // A signed anonymous result goes the locked path, where the record's applied signatures are read (P197).
    if (sig === undefined && (await finishedUnlocked(ctx, res))) return ACK;
    const r = await withLockedJob(ctx, res.jobId, (lease, job) => applyResult(ctx, lease, res, job, h.seq, sig));
    return lockedOutcome(r, h.deliveryCount);
  };
}

/**
 * The common case, a final result for the current attempt of a DISPATCHED or RUNNING job, in one
 * lock-free script (job-store finish, issue 7): no lock to take, no record to read first. It
 * writes only while no lock is held, so it never races a locked handler; anything it does not
 * write (a held lock, a stale attempt, any other state) goes the locked path, which decides.
 * Retryable failures always go that path: their outcome depends on the attempts read under the lock.
 */
async function finishedUnlocked(ctx: SchedulerContext, res: JobResult): Promise<boolean> {
  const mapped = mapStatus(res.status);
  if (!mapped || mapped.retryable || !TERMINAL_STATES.has(mapped.to)) return false;
  // D45 for the artifacts too, ahead of the write like the result key (a refused write goes the locked path, which expires them again).
  await expireArtifacts(ctx, res);
  const f = await ctx.store.finish(res.jobId, mapped.to, { dispatchId: res.dispatch?.dispatchId ?? '', patch: finalPatch(resultPatch(res), mapped.to), expireResult: true });
  if (!f.ok) return false;
  const d = f.job.dispatch;
  if (d) ctx.verifier.delivered(f.job.id, d.dispatchId);
  ctx.workers.noteFinished(d?.workerId ?? res.workerId);
  await handOffFreedSlot(ctx, f.job);
  await handOffCapacity(ctx, d?.workerId ?? res.workerId);
  return true;
}

function resultPatch(res: JobResult): JobPatch {
  const patch: JobPatch = {};
  if (res.resultPtr) patch.resultPtr = res.resultPtr;
  if (res.workerId) patch.workerId = res.workerId;
  if (res.errorCode || res.errorMessage) patch.error = boundedError(res.errorCode || 'worker_error', res.errorMessage);
  return patch;
}

/**
 * P267: a job's last answer is its answer. An earlier attempt's output (its `resultPtr`) and, once it
 * SUCCEEDED, its error are cleared when the final result carries none: a job retried after a
 * failure with output, then SUCCEEDED without, showed the failed attempt's output and error.
 */
function finalPatch(patch: JobPatch, to: JobState): JobPatch {
  if (patch.resultPtr === undefined) patch.resultPtr = null;
  if (to === 'SUCCEEDED' && patch.error === undefined) patch.error = null;
  return patch;
}

/** The worker that sent a result: the attempt's assigned worker, else the packet's. */
function senderOf(res: JobResult): string | undefined {
  return res.dispatch?.assignedWorkerId || res.workerId || undefined;
}

function ignore(ctx: SchedulerContext, reason: string, jobId: string): HandlerOutcome {
  ctx.metrics.ignored.inc({ kind: 'result', reason });
  ctx.logger.debug('result ignored', { job_id: jobId, reason });
  return ACK;
}

/**
 * P197: with verification on, a signed result without a dispatch id is named by a digest of what
 * its signature covers (the packet without field 14; its packet id and created_at make each answer
 * unique). It applies to whatever attempt is current, and signed content cannot be made without the
 * key, so the only way to get the same content again is to publish a capture again: attempt 1's
 * retryable answer published while attempt 2 runs would otherwise start attempt 3 (P41's sequence
 * guard does not stop it: a republish gets a new sequence). Not the signature's digest: an ECDSA
 * signature (r, s) has a twin (r, n − s) that verifies too, made without the key.
 */
function replayKey(ctx: SchedulerContext, packet: BusPacket, res: JobResult): string | undefined {
  if (ctx.config.capVerifyKey === undefined || res.dispatch?.dispatchId || packet.signature.length === 0) return undefined;
  return createHash('sha256').update(encodeForSigning(packet)).digest('base64url').slice(0, 22);
}

const MAX_RESULT_SIGS = 32;

async function applyResult(ctx: SchedulerContext, lease: Lease, res: JobResult, job: JobRecord | null, seq: number, sig?: string): Promise<HandlerOutcome> {
  // D45 for the job's own artifact keys this result names, whatever becomes of it: applied
  // (terminal or a retry), or ignored (stale, late, for an expired record); each would otherwise
  // keep its keys forever. Idempotent; nothing for a result without artifacts.
  await expireArtifacts(ctx, res);
  if (!job) return ignore(ctx, 'unknown_job', res.jobId);
  if (TERMINAL_STATES.has(job.state)) {
    // Redelivery after our own terminal write: re-run the idempotent side effects (D14, D45),
    // all of them, broadcast included, when the write's reply was lost (P330).
    if (!(await ctx.store.settleEnded(job))) await ctx.store.writeDlq(job);
    await ctx.store.expireResult(job);
    // A job ended by a cancel or a timeout: its worker's answer means a slot of it is free now
    // (P32; before, the worker looked busy until its next heartbeat, and a submit NAKed as
    // overload for that long could run out of deliveries and wait for the replayer).
    if (ENDED_BY_OTHERS.has(job.state)) ctx.workers.noteFinished(senderOf(res));
    // P135: the ended attempt's worker answered, so its JobCancel is no longer sent again.
    if (!namesOtherAttempt(res.dispatch, job)) await cancelAnswered(ctx, job);
    return ignore(ctx, 'terminal', job.id);
  }
  // CONTRACT §3: a result without `dispatch` applies to the current attempt.
  const current = job.dispatch;
  if (namesOtherAttempt(res.dispatch, job)) {
    ctx.workers.noteFinished(senderOf(res)); // a replaced attempt's worker is done with it
    return ignore(ctx, 'stale_dispatch', job.id);
  }
  // P41: a result without a dispatch id that we already applied (this is its redelivery: the
  // handler failed after its write, say at the next attempt's mark) would otherwise apply to the
  // attempt it started, and a retryable one would start yet another while that one runs. The job
  // keeps only the last applied one's stream sequence, and sequences only grow: every applied
  // result ended its attempt (a new one, or a terminal state), so a result with a sequence at or
  // below it was published before the current attempt went out and cannot be that attempt's
  // (an older result redelivered after a later one was applied; before: only an equal one).
  const anonymous = !res.dispatch?.dispatchId;
  if (anonymous && seq > 0 && job.resultSeq !== undefined && seq <= job.resultSeq) return ignore(ctx, 'already_applied', job.id);
  if (sig !== undefined && job.resultSigs?.includes(sig) === true) {
    ctx.logger.warn('signed result published again ignored', { job_id: job.id, seq });
    return ignore(ctx, 'replayed', job.id);
  }
  if (!ATTEMPT_OUT_STATES.has(job.state)) return ignore(ctx, `unexpected_state_${job.state}`, job.id);
  if (current) ctx.verifier.delivered(job.id, current.dispatchId);
  const mapped = mapStatus(res.status);
  // A status outside the enum is one label, not one metric series per value a worker sends (P73).
  if (!mapped) return ignore(ctx, KNOWN_STATUSES.has(res.status) ? `status_${res.status}` : 'status_unknown', job.id);

  const patch = resultPatch(res);
  if (anonymous && seq > 0) patch.resultSeq = seq;
  if (sig !== undefined) patch.resultSigs = [...(job.resultSigs ?? []), sig].slice(-MAX_RESULT_SIGS);
  const maxAttempts = job.maxAttempts ?? ctx.config.maxAttempts;
  // D48: a `worker_busy` refusal happens before the attempt starts, so it is backpressure, not a
  // failed attempt: it does not use up maxAttempts (bounded separately) and waits with backoff
  // instead of an immediate redispatch that a burst would refuse again.
  const busy = mapped.retryable === true && res.errorCode === WORKER_BUSY;
  const refusals = (job.busyRefusals ?? 0) + (busy ? 1 : 0);
  if (busy) patch.busyRefusals = refusals;
  let to = mapped.to;
  // P71: a SUCCEEDED result whose stored output is over the decision's max_artifact_bytes.
  const oversized = to === 'SUCCEEDED' ? await oversizedOutput(ctx, job, res) : null;
  if (oversized) {
    to = 'FAILED';
    patch.resultPtr = null;
    patch.error = { code: 'artifact_too_large', message: oversized.message };
  }
  if (busy && refusals > MAX_BUSY_REFUSALS) {
    to = 'FAILED';
    patch.error = { code: 'max_attempts', message: `refused by busy workers ${refusals - 1} times` };
  } else if (mapped.retryable && !busy && attemptsUsed(job) >= maxAttempts) {
    to = 'FAILED';
    patch.error = boundedError('max_attempts', `failed after ${job.attempts} attempts: ${res.errorMessage || res.errorCode || 'retryable failure'}`);
  } else if (mapped.retryable && pastDeadline(job)) {
    // D46, P139: no new attempt past the job's deadline_ms. The attempt that answered is over,
    // so the job ends FAILED (not TIMEOUT: nothing is out), with the deadline's code.
    to = 'FAILED';
    patch.error = boundedError('deadline_exceeded', `deadline_ms passed; no attempt after attempt ${job.attempts}: ${res.errorMessage || res.errorCode || 'retryable failure'}`);
  }
  // A result for a job still DISPATCHED means it ran (BEHAVIOURS §1.4: RUNNING when the first
  // progress or the result arrives; worker-sdk sends no start ack for a job that ends within
  // its ack delay): the write goes through RUNNING, so the broadcast still shows it. Not for a
  // busy refusal, which answered before the attempt started. Under our lock the state cannot
  // move (markRunning writes only while no lock is held), so `from` is exactly the state read.
  const via = job.state === 'DISPATCHED' && !busy ? ('RUNNING' as const) : undefined;
  // D45 goes with a terminal write (an EXPIRE for a write that is then refused only shortens a key
  // to the job TTL): the store expires the result key (the artifacts got it above).
  const expireResult = TERMINAL_STATES.has(to);
  if (expireResult) finalPatch(patch, to);
  const from: JobState[] = via ? ['DISPATCHED'] : ['DISPATCHED', 'RUNNING'];
  if (to === 'RETRYING') {
    // D13 (BEHAVIOURS §1.5, P140): the next attempt waits 1 s·2ⁿ (±20 %) in job:retry, n = the
    // attempts used before it, and the replayer leader's drive sends it (asking the kernel first,
    // P131); a worker_busy refusal waits by its own count (D48). Filed before the write, so a
    // RETRYING job always has its entry; an entry whose write is then refused finds the job in
    // another state when due, and the drive drops it.
    await ctx.store.scheduleRetry(job.id, clusterNow() + backoffMs(busy ? refusals - 1 : attemptsUsed(job) - 1));
  }
  // Every outcome ends the handler, a retry too (the replayer sends it), so the write also
  // releases the lock (issue 7).
  const w = releasedBy(lease, await ctx.store.transition(job.id, to, { token: lease.token, from, via, patch, current: job, release: true, expireResult }));
  if (!w.ok) return w.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : ignore(ctx, w.reason, job.id);
  ctx.workers.noteFinished(current?.workerId ?? res.workerId, busy);
  // Deleted once the FAILED write is committed: a crash before that redelivers the result, which
  // must still find the output to measure. A crash after the write leaves it to the job TTL its
  // keys were given (oversizedOutput).
  if (oversized) await ctx.store.dropOutputs(oversized.keys);
  await handOffFreedSlot(ctx, w.job);
  // A worker_busy refusal ended no running job: it freed no slot.
  if (!busy) await handOffCapacity(ctx, current?.workerId ?? res.workerId);
  return ACK;
}

/**
 * P71: for a job allowed with max_artifact_bytes, the result's and artifacts' stored size when it
 * is over the bound (with the pointers, to delete), else null. Only what sits behind redis://
 * pointers is measured; other stores are the worker's own.
 */
async function oversizedOutput(ctx: SchedulerContext, job: JobRecord, res: JobResult): Promise<{ keys: string[]; message: string } | null> {
  const max = job.maxArtifactBytes;
  if (max === undefined) return null;
  // Only the job's own keys (res:<id>, res:<id>:…): a pointer to anything else is not ours to
  // measure or delete, whatever the worker names (another job's output, a record, a lock).
  const { keys, foreign } = ownOutputKeys(job.id, [res.resultPtr || job.resultPtr || '', ...res.artifactPtrs].filter((p) => p !== ''));
  if (foreign.length > 0) ctx.logger.warn('output pointers outside the job\'s own res: keys are not measured for max_artifact_bytes', { job_id: job.id, pointers: foreign });
  const size = await ctx.store.outputBytes(keys);
  if (size <= max) return null;
  ctx.logger.warn('result over max_artifact_bytes, job FAILED and its output deleted', { job_id: job.id, bytes: size, max_artifact_bytes: max, rule_id: job.safety?.ruleId ?? '' });
  // The job TTL first (D45): if we die between the FAILED write and the delete, nothing is left forever.
  await ctx.store.expireOutputs(keys);
  return { keys, message: `result and artifacts are ${size} bytes, over max_artifact_bytes ${max} (policy rule ${job.safety?.ruleId ?? ''})` };
}

/**
 * D45 for a result's artifacts: the job's own `res:<id>:<name>` keys among its `artifact_ptrs` get
 * the job TTL, as its result key does when the job ends (results: keep the job TTL even in the DLQ,
 * P74). Only the job's own keys (ownOutputKeys, P72): any other pointer a worker names (another
 * job's output, a record, a lock, another store) is never touched. Called for every result before
 * anything is written or ignored, so a crash after it leaves nothing that never expires; a result
 * without artifacts costs nothing.
 */
async function expireArtifacts(ctx: SchedulerContext, res: JobResult): Promise<void> {
  const { keys } = ownOutputKeys(res.jobId, res.artifactPtrs);
  if (keys.length > 0) await ctx.store.expireOutputs(keys);
}

const KNOWN_STATUSES: ReadonlySet<number> = new Set(Object.values(JobStatus).filter((v): v is number => typeof v === 'number'));

/** worker-sdk's refusal code when a worker is at maxParallelJobs (its README, "Capacity"). */
const WORKER_BUSY = 'worker_busy';
const MAX_BUSY_REFUSALS = 20;

