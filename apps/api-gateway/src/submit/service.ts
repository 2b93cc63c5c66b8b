// The submit use case (BEHAVIOURS §1.1), independent of HTTP so the gRPC
// CordumApi.SubmitJob can reuse it. Order: idempotency claim → Evaluate →
// job record (+ ctx) → publish. Every exit without a job releases the claim.
import { randomUUID } from 'node:crypto';
import { subjects } from '@cordum/bus';
import { JobStoreError, jobKeys, policyCheckInit, SUBMIT_FAILED_CODE, failedAtSubmit, type JobRecord, type JobStore, type NewJob, type Priority, type RetriedFrom, type SafetyRecord } from '@cordum/job-store';
import { clusterNow, type RedisClient } from '@cordum/redis';
import type { Locks } from '@cordum/locks';
import type { Logger } from '@cordum/service-kit';
import type { PolicyEvaluator, Verdict } from '../safety/evaluator';
import { SubmitError } from './errors';
import { createIdempotencyClaims, type IdempotencyClaims } from './idempotency';
import { encodeJobRequest, submitMsgId } from './packet';
import { failPendingJob } from './fail-pending';
import { withTimeout } from '../util/timeout';
import { writeMayHaveRun } from '../http/store-call';
import { errorText } from '@cordum/service-kit';

/** D25: a duplicate waits this long for the first request's job to appear. */
export const IDEMPOTENCY_WAIT_MS = 5_000;
/** Redis calls on the submit path give up after this (BEHAVIOURS §8: fail fast, 503). */
export const STORE_TIMEOUT_MS = 3_000;
/** A claim this old with no job is orphaned: a live submit ends (job or release) well within it (Evaluate 2 s + store 3 s + publish). */
export const STALE_CLAIM_MS = 30_000;
/**
 * A PENDING job whose record was written less than this ago may still be in its winner's publish
 * (the 2 s budget of D43, one last 250 ms attempt, then D11's fail CAS): a duplicate waits for the
 * outcome instead of answering with a job that may yet be failed at submit (P40).
 */
export const SUBMIT_SETTLE_MS = 3_000;

/**
 * P40, P325: a PENDING job whose record was written (its `updatedAt`) less than SUBMIT_SETTLE_MS
 * ago: its winner may still be publishing it. Not its `createdAt`, the request's arrival since
 * P321, which can be seconds before the write (a slow Evaluate, a winner that first waited on an
 * earlier one): the job looked settled while its publish could still fail.
 */
export function stillPublishing(job: JobRecord, nowMs = clusterNow()): boolean {
  if (job.state !== 'PENDING') return false;
  // Written by a scheduler (a wait for a worker or a concurrency slot) or by an approval: its
  // submit was delivered, so it has settled, however recent that write (which moves updatedAt).
  if ((job.scheduleTries ?? 0) > 0 || job.workerWait !== undefined || job.concurrency !== undefined || job.approval !== undefined) return false;
  return nowMs - job.updatedAt < SUBMIT_SETTLE_MS;
}

/**
 * P40: whether the winner's job answers a request waiting on the same claim (an idempotency
 * duplicate, a concurrent DLQ retry, P56): a job of the waiter's tenant, not failed at submit
 * (D11, `failedAtSubmit`: its winner releases the claim and the waiter submits itself; a job whose
 * worker reported `bus_unavailable` ran and is an answer, P325), and not still publishing unless
 * the waiter has waited SUBMIT_SETTLE_MS past its own `deadlineMs` (a record its scheduler keeps
 * touching while PENDING is answered then).
 */
export function answersWaiter(job: JobRecord | null, tenant: string, deadlineMs: number, nowMs = clusterNow()): job is JobRecord {
  if (job === null || job.tenant !== tenant) return false;
  if (failedAtSubmit(job.state, job.error?.code, job.attempts)) return false;
  return !stillPublishing(job, nowMs) || nowMs > deadlineMs + SUBMIT_SETTLE_MS;
}

export interface SubmitCommand {
  /** Preset job id (DLQ retry claims it before submitting); a fresh UUID otherwise. */
  jobId?: string;
  /** When the request arrived at the gateway (clusterNow): the job's createdAt (P321). */
  receivedAt?: number;
  tenant: string;
  principalId: string;
  prompt: string;
  topic: string;
  context: unknown;
  priority: Priority;
  labels: Record<string, string>;
  idempotencyKey?: string;
  /**
   * A claim someone else took for this job id (DLQ retry: `dlq:retry:<id>` = jobId). The record
   * is written only while it still names the job, atomically on standalone Redis (P21, P37); a
   * create it refuses throws SubmitError `claim_lost`. Ignored when `idempotencyKey` is set.
   */
  claimKey?: string;
  /** With `claimKey`: the value it takes when the record is written, on standalone Redis in the same script (P249). */
  claimMark?: string;
  memoryId?: string;
  contextMode?: string;
  capability?: string;
  riskTags: string[];
  requires: string[];
  actorId?: string;
  actorType?: string;
  deadlineMs?: number;
  /** DLQ retry: the job it retries, and who may therefore not approve this one. */
  retriedFrom?: RetriedFrom;
}

export type SubmitOutcome =
  | { kind: 'accepted'; jobId: string; traceId: string }
  | { kind: 'approval_required'; jobId: string; traceId: string; reason: string }
  | { kind: 'denied'; jobId: string; traceId: string; reason: string };

export interface SubmitBus {
  publish(subject: string, data: Uint8Array, opts?: { msgId?: string }): Promise<void>;
}

export interface SubmitDeps {
  redis: RedisClient;
  store: JobStore;
  bus: SubmitBus;
  locks: Locks;
  evaluator: PolicyEvaluator;
  logger: Logger;
  instanceId: string;
  jobTtlMs: number;
}

export interface SubmitService {
  submit(cmd: SubmitCommand): Promise<SubmitOutcome>;
}

/**
 * Fail fast instead of queueing behind a reconnect: only a ready client (or a
 * lazy one that has not dialled yet) is used (BEHAVIOURS §8).
 */
export function redisUsable(redis: RedisClient): boolean {
  return redis.status === 'ready' || redis.status === 'wait';
}

/**
 * Whether a create that failed may still have run in Redis (P39): it was sent, but its reply never
 * came (a command or store timeout, a connection lost under it; Redis paused past the timeout runs
 * it when it resumes). An error reply means it ran and wrote no record; a client that was not
 * ready, or a stream that was not writeable, sent nothing.
 */
function createMayHaveRun(err: unknown): boolean {
  return err instanceof SubmitError && err.code === 'redis_unavailable' && writeMayHaveRun(err.cause);
}

/** job-store's refusal to create a job whose idempotency claim another request took over (P21). */
function isClaimLost(err: unknown): boolean {
  return err instanceof JobStoreError && err.code === 'claim_lost';
}

export function createSubmitService(deps: SubmitDeps): SubmitService {
  const claims: IdempotencyClaims = createIdempotencyClaims(deps.redis, deps.jobTtlMs);
  const log = deps.logger;

  /** Any failure of a Redis call on this path is a dependency fault: 503, never 500. */
  const store = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    if (!redisUsable(deps.redis)) throw new SubmitError('redis_unavailable', `redis is ${deps.redis.status}`);
    try {
      return await withTimeout(fn(), STORE_TIMEOUT_MS, what);
    } catch (err) {
      if (err instanceof SubmitError || isClaimLost(err)) throw err;
      throw new SubmitError('redis_unavailable', `${what}: ${errorText(err)}`, { cause: err });
    }
  };

  /**
   * The submit's answer for `job`: from the state it was created in (P166: a retry of a key gets
   * the first answer, D25, not a 403 because the scheduler denied the job since). A record written
   * before submitState existed answers from its current state, as before.
   */
  const outcomeOf = (job: JobRecord): SubmitOutcome => {
    const state = job.submitState ?? job.state;
    if (state === 'APPROVAL_REQUIRED') return { kind: 'approval_required', jobId: job.id, traceId: job.traceId, reason: job.safety?.reason ?? '' };
    if (state === 'DENIED' && job.safety?.decision === 'deny') return { kind: 'denied', jobId: job.id, traceId: job.traceId, reason: job.safety.reason };
    return { kind: 'accepted', jobId: job.id, traceId: job.traceId };
  };

  /**
   * D25 loser: answer with the winner's job once its submit has settled (≤ 5 s). A job the winner
   * failed at submit (D11 bus_unavailable) is not an answer: its winner releases the claim and
   * this request takes the key (P40).
   */
  const replay = async (tenant: string, key: string, jobId: string): Promise<SubmitOutcome | null> => {
    const deadline = clusterNow() + IDEMPOTENCY_WAIT_MS;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      const job = await store('read job', () => deps.store.getJob(jobId));
      if (answersWaiter(job, tenant, deadline)) return outcomeOf(job);
      const holder = await store('read claim', () => claims.current(tenant, key));
      if (holder !== jobId) return null; // released (winner ended without a job) or replaced
      // A job still publishing is waited for past the deadline (answersWaiter bounds it).
      if (clusterNow() > deadline && (job === null || !stillPublishing(job))) {
        // A claim whose job never appeared long after any live submit would have finished: its
        // winner died between claim and record. Free it (CAS on the job id) so the key is usable
        // again instead of answering 409 for the whole job TTL.
        if ((await store('claim age', () => claims.ageMs(tenant, key))) >= STALE_CLAIM_MS) {
          // No record read above: freed only while there still is none (P307), else the next turn
          // answers from the record that landed meanwhile. A record failed at submit (D11, never
          // runs) whose winner died before releasing its claim is freed as it is.
          const freed = await store('free stale claim', () => (job === null ? claims.freeStale(tenant, key, jobId) : claims.release(tenant, key, jobId).then(() => true)));
          if (!freed) continue;
          log.warn('freed a stale idempotency claim without a job', { tenant, job_id: jobId });
          return null;
        }
        throw new SubmitError('idempotency_in_progress', 'a request with this idempotency key is still in progress', { jobId });
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  };

  const safetyRecord = (v: Verdict): SafetyRecord => {
    switch (v.kind) {
      case 'allow':
        return { decision: v.decision, reason: v.reason, ruleId: v.ruleId, policySnapshot: v.policySnapshot };
      case 'unavailable':
        return { decision: 'unavailable', reason: v.reason, ruleId: '', policySnapshot: '' };
      case 'deny':
        return { decision: 'deny', reason: v.reason, ruleId: v.ruleId, policySnapshot: v.policySnapshot };
      case 'require_human':
        return { decision: 'require_human', reason: v.reason, ruleId: v.ruleId, policySnapshot: v.policySnapshot };
      case 'throttle':
        return { decision: 'throttle', reason: v.reason, ruleId: v.ruleId, policySnapshot: v.policySnapshot };
    }
  };

  const runClaimed = async (cmd: SubmitCommand, jobId: string, traceId: string): Promise<SubmitOutcome> => {
    const verdict = await deps.evaluator.evaluate({
      ...policyCheckInit(jobId, cmd),
      inputSizeBytes: BigInt(Buffer.byteLength(cmd.prompt) + Buffer.byteLength(JSON.stringify(cmd.context ?? null))),
    });
    if (verdict.kind === 'unavailable') log.warn('safety kernel unavailable at submit; accepting as PENDING (D19)', { job_id: jobId, reason: verdict.reason, err: verdict.detail });
    if (verdict.kind === 'throttle') {
      throw new SubmitError('policy_throttled', verdict.reason || 'throttled by policy', { retryAfterMs: verdict.retryAfterMs });
    }
    const initialState = verdict.kind === 'deny' ? 'DENIED' : verdict.kind === 'require_human' ? 'APPROVAL_REQUIRED' : 'PENDING';
    const newJob: NewJob = {
      id: jobId,
      tenant: cmd.tenant,
      topic: cmd.topic,
      traceId,
      priority: cmd.priority,
      labels: cmd.labels,
      prompt: cmd.prompt,
      context: cmd.context ?? null,
      principalId: cmd.principalId,
      actorId: cmd.actorId,
      retriedFrom: cmd.retriedFrom,
      actorType: cmd.actorType,
      capability: cmd.capability,
      riskTags: cmd.riskTags,
      requires: cmd.requires,
      memoryId: cmd.memoryId,
      contextMode: cmd.contextMode,
      idempotencyKey: cmd.idempotencyKey,
      deadlineMs: cmd.deadlineMs,
      initialState,
      safety: safetyRecord(verdict),
      ...(cmd.receivedAt !== undefined ? { submittedAt: cmd.receivedAt } : {}),
    };
    // createJob writes ctx:<id>, the record and its index entries (with the record or before it,
    // so a crash after this line leaves a job the replayer finds: decisions.md P20); DENIED also
    // writes the DLQ entry. What follows the record (DLQ entry, index TTLs) is sent with it but
    // awaited after the publish (issue 7: the scheduler gets the job one Redis round trip sooner).
    const sideWrites: Promise<void>[] = [];
    const claim = cmd.idempotencyKey !== undefined ? jobKeys.idempotency(cmd.tenant, cmd.idempotencyKey) : cmd.claimKey;
    const claimMark = cmd.idempotencyKey !== undefined ? undefined : cmd.claimMark;
    let job: JobRecord;
    try {
      job = await store('create job', () => deps.store.createJob(newJob, { sideWrites, claim, claimMark }));
    } catch (err) {
      // The record may exist and, PENDING, be run by the replayer (D13): the claim must keep naming
      // it (a retry of the key answers with it, or frees the claim after STALE_CLAIM_MS if it never
      // appears), and the client learns its id (P39).
      if (createMayHaveRun(err)) throw new SubmitError('submit_state_unknown', 'the job may or may not have been created; query it by job_id', { jobId, cause: err });
      throw err;
    }
    const indexed = (): Promise<unknown> => store('index job', () => Promise.all(sideWrites));
    if (job.state !== 'PENDING') {
      // The record exists (held or denied): a side write that failed (its DLQ entry, the listing
      // TTLs) is logged, not answered with an error a client would retry into a second job (P39).
      await indexed().catch((err: unknown) => log.error('created job not fully indexed', { job_id: jobId, state: job.state, err: errorText(err) }));
      return outcomeOf(job);
    }

    try {
      await deps.bus.publish(subjects.submit, encodeJobRequest(job, deps.instanceId, cmd.deadlineMs), { msgId: submitMsgId(jobId) });
    } catch (err) {
      // D11: fail the job we own, or hand it to the replayer if we cannot prove it is unpublished.
      const failed = await failPendingJob(deps, jobId, SUBMIT_FAILED_CODE, `publish to ${subjects.submit} failed`).catch(() => false);
      log.error('submit publish failed', { job_id: jobId, failed, err: errorText(err) });
      if (failed) throw new SubmitError('bus_unavailable', 'message bus unavailable; the job was not accepted', { jobId, cause: err });
      throw new SubmitError('submit_state_unknown', 'the job may or may not have been accepted; query it by job_id', { jobId, cause: err });
    }
    // Published: the job runs whatever happens next, so an index write that failed is logged,
    // not answered with an error a client would retry into a second job.
    await indexed().catch((err: unknown) => log.error('submitted job not indexed', { job_id: jobId, err: errorText(err) }));
    return { kind: 'accepted', jobId, traceId };
  };

  /** One claim-and-create; null when the claim was taken over before the record was written (P21). */
  const submitOnce = async (cmd: SubmitCommand, jobId: string, traceId: string): Promise<SubmitOutcome | null> => {
    const key = cmd.idempotencyKey;
    if (key !== undefined) {
      for (;;) {
        const claim = await store('idempotency claim', () => claims.claim(cmd.tenant, key, jobId)).catch((err: unknown) => {
          // P165: a claim whose reply was lost (Redis frozen past the command timeout) may still
          // run, naming a job this request never creates, and every retry of the key would wait
          // and get 409 idempotency_in_progress until the claim went stale (30 s). Its release,
          // sent after it on the same connection, runs after it. A caller's own job id is not
          // released: a retry carrying the same id may hold the key by now.
          if (cmd.jobId === undefined) {
            void claims.release(cmd.tenant, key, jobId).catch((e: unknown) => log.warn('idempotency claim release failed', { err: errorText(e) }));
          }
          throw err;
        });
        if (claim.kind === 'claimed') break;
        const previous = await replay(cmd.tenant, key, claim.jobId);
        if (previous) return previous;
      }
    }
    let jobExists = false;
    try {
      const out = await runClaimed(cmd, jobId, traceId);
      jobExists = true;
      return out;
    } catch (err) {
      // This request was taken for dead (claim older than STALE_CLAIM_MS, a paused replica) and
      // another one took the key: nothing was written; answer as that request's duplicate.
      if (isClaimLost(err)) {
        // An outside claim (claimKey): its owner answers with the job of whoever holds it now.
        if (key === undefined) throw new SubmitError('claim_lost', 'the claim of this submit was taken over before its job was written', { jobId, cause: err });
        log.warn('idempotency claim taken over before the job was written; answering with the job of the key', { tenant: cmd.tenant, job_id: jobId });
        return null;
      }
      // submit_state_unknown: a job exists and may run, so the key must keep pointing at it.
      jobExists = err instanceof SubmitError && err.code === 'submit_state_unknown';
      throw err;
    } finally {
      if (key !== undefined && !jobExists) {
        await claims.release(cmd.tenant, key, jobId).catch((e: unknown) => log.warn('idempotency claim release failed', { err: String(e) }));
      }
    }
  };

  return {
    async submit(cmd) {
      const jobId = cmd.jobId ?? randomUUID();
      const traceId = randomUUID();
      // A lost claim is retried as a duplicate of the key's request (nothing of the job was written
      // but its input, under the same id); lost three times in a row is a key changing hands: 409.
      for (let round = 0; round < 3; round++) {
        const out = await submitOnce(cmd, jobId, traceId);
        if (out) return out;
      }
      throw new SubmitError('idempotency_in_progress', 'a request with this idempotency key is still in progress');
    },
  };
}
