import { clusterNow, defineScripts, isWrongType, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import createLua from './lua/create-n.lua';
import transitionLua from './lua/transition-3.lua';
import markPublishedLua from './lua/mark-published-2.lua';
import reattemptLua from './lua/reattempt-3.lua';
import fenceClaimLua from './lua/fence-claim-1.lua';
import retryTakeLua from './lua/retry-take-1.lua';
import markRunningLua from './lua/mark-running-2.lua';
import finishLua from './lua/finish-2.lua';
import dlqSetLua from './lua/dlq-set-2.lua';
import renewLiveLua from './lua/renew-live-4.lua';
import { decodeFields, decodeFlat, encodeFields, encodePatch, flatFields, withFields } from './codec';
import { createIndexWriter } from './index-writer';
import { failureFromCode, JobStoreError, markCommitted } from './errors';
import { jobKeys, resultKey } from './keys';
import { ACTIVE_STATES, allowedSources, canTransition, DLQ_STATES, failedAtSubmit, isJobState, TERMINAL_STATES, type JobState } from './states';
import { createJobScans, type JobScans } from './scans';
import { createJobSlots, type JobSlots } from './slots';
import { jobRequestHash, type StoredInput } from './approval';
import { boundedError, type DlqEntry, type JobPatch, type JobRecord, type NewJob, type TransitionResult } from './types';

export const DLQ_TTL_MS = 30 * 24 * 3600 * 1000; // D45

export interface JobStoreOptions {
  jobTtlMs: number;
  /** DLQ_TTL (P238): the life of a DLQ entry, its tombstone, and the dead job's record and history (P74). Default DLQ_TTL_MS (30 d, D45). */
  dlqTtlMs?: number;
  /** Called after every committed transition (and after a create); the scheduler publishes sys.job.state from it (D15). Must not throw. */
  onTransition?: (job: JobRecord, from: JobState | null) => void;
  /**
   * Called after every DLQ write of a job in a DLQ state, the first and each idempotent re-run
   * (a redelivered result re-runs it, D14), unless the write asked not to notify. The services
   * publish the `sys.job.dlq` notification from it (dlqNotifier). Must not throw.
   */
  onDlq?: (job: JobRecord, entry: DlqEntry) => void;
  now?: () => number;
}

export interface TransitionOptions {
  /** The job lock token (`<instance>:<fence>`); every transition is fenced (D4). */
  token: string;
  /** States the caller expects the job to be in; anything else is `state_mismatch`. */
  from?: JobState[];
  patch?: JobPatch;
  /** DLQ reason text when `to` is FAILED/DENIED/TIMEOUT; defaults to the error message. */
  dlqReason?: string;
  /**
   * The record as the caller holds it (read or returned under the same lock). When Redis still
   * has that version (same `updatedAt`), the new record is built from it and the patch instead of
   * being read back with HGETALL (issue 7).
   */
  current?: JobRecord;
  /**
   * Go through this state on the way to `to` in the same atomic write (e.g. PENDING → SCHEDULED
   * → DISPATCHED once the route is known); both steps must be in the table. The middle state is
   * never stored, but it is broadcast (onTransition) and indexed like a real step would leave it.
   * A `safety` patch is recorded as the decision that led to this state.
   */
  via?: JobState;
  /**
   * Release the job lock in the same script once the write committed (the caller is done with
   * the job; the lease must then be marked released, see `Lease.markReleased`). Not on failure:
   * the caller still owns the lock and releases it itself.
   */
  release?: boolean;
  /**
   * Start the writes that follow the record's (index moves, the DLQ entry of a DLQ state) without
   * waiting for them: their promise is pushed here, and the caller awaits it once its next step
   * (a publish) is on its way, so the index round trip is off the job's path (issue 7). They are
   * sent before anything the caller does next, and D16 lets an index lag its record. The
   * broadcast then goes out without waiting for them either.
   */
  sideWrites?: Promise<void>[];
  /**
   * D45: PEXPIRE the job's result (`resultPtr` of the patch or the record, else `res:<id>`) with
   * the job TTL before the write, so a job seen terminal always has its result on a TTL. On
   * standalone Redis it is sent right ahead of the write on the same connection, which Redis
   * runs in order, so it costs no round trip of its own (issue 7); across cluster nodes it is
   * awaited first. Its failure fails the call (a redelivered result re-runs it, D14). Default:
   * true for a terminal `to` (P327: every path that ends a job, not only those that remembered
   * to ask; a RETRYING job's result ended FAILED by a stopped retry kept no TTL).
   */
  expireResult?: boolean;
}

export interface MarkPublishedOptions {
  /** As `TransitionOptions.current`: the record returned by the DISPATCHED write. */
  current?: JobRecord;
  /** As `TransitionOptions.release`: D6, the dispatch handler is done once the attempt is marked. */
  release?: boolean;
}

export type MarkPublishedResult = { ok: true; job: JobRecord } | { ok: false; reason: 'not_found' | 'fenced' | 'state_mismatch'; current?: JobRecord };

export type MarkRunningResult =
  | { ok: true; job: JobRecord }
  /** `busy`: a job lock is held (retry shortly). */
  | { ok: false; reason: 'busy' | 'not_found' }
  /**
   * `state_mismatch`: not DISPATCHED (RUNNING already, or ended); `stale_dispatch`: the progress
   * names an attempt that is not the job's current one. `state` is the job's state.
   */
  | { ok: false; reason: 'state_mismatch' | 'stale_dispatch'; state: JobState };

export type FinishResult =
  | { ok: true; job: JobRecord; from: JobState }
  /**
   * `busy`: a job lock is held; `stale_dispatch`: the result names an older attempt; `size_bound`:
   * a SUCCEEDED result for a job with `maxArtifactBytes`, whose output must be measured first
   * (P71). The caller takes the locked path.
   */
  | { ok: false; reason: 'busy' | 'not_found' | 'state_mismatch' | 'stale_dispatch' | 'size_bound' };

export type ReattemptResult =
  | { ok: true; job: JobRecord }
  /** `claimed`: a worker claimed the old attempt, so it started (D1): never redispatch it. */
  | { ok: false; reason: 'not_found' | 'fenced' | 'state_mismatch' | 'claimed'; current?: JobRecord };

export interface JobStore extends JobScans, JobSlots {
  /**
   * `sideWrites` as in TransitionOptions: what follows the record (the listing keys' TTLs, a
   * DENIED job's DLQ entry) is started, not awaited; the new job's index entries go with the
   * record (P20). `claim`: the key of the submit's idempotency claim (D25), which must still name
   * `j.id` when the record is written (in the create script on standalone Redis; read just before
   * it on a cluster); otherwise nothing is written and JobStoreError `claim_lost` is thrown (P21).
   * `claimMark`: the value the claim takes when the record is written, its TTL kept, in the same
   * script on standalone Redis (P249, a DLQ retry's '<id>:created'); ignored on a cluster, where
   * the caller marks it after the create.
   */
  createJob(j: NewJob, o?: { sideWrites?: Promise<void>[]; claim?: string; claimMark?: string }): Promise<JobRecord>;
  getJob(id: string): Promise<JobRecord | null>;
  readResult(job: JobRecord): Promise<unknown>;
  readContext(id: string): Promise<unknown>;
  /** D18: jobRequestHash() of the record and its stored input (ctx:<id>). */
  requestHash(job: JobRecord): Promise<string>;
  /**
   * D45 on approval: the job lives another job TTL from now. Its input (`ctx:<id>`, as D45 says)
   * and, with it, what the approved job needs to reach a terminal state: its record, fence and
   * decision history (P75; a job approved near the end of its TTL otherwise lost its record
   * while it ran), and the submit's idempotency claim of a keyed job (P246), so a repeat of the
   * submit while the job is live gets this job.
   */
  refreshLifetime(job: Pick<JobRecord, 'id' | 'tenant' | 'idempotencyKey'>): Promise<void>;
  /**
   * P244: every live job (a member of a job:active:<state> index whose record is in that kind of
   * state) with less than half the job TTL left lives another job TTL from now: its record,
   * fence, decision history and worker claim. Every live job's keys in other slots (its input,
   * its tenant's listing indexes, its concurrency group's slot sets, its submit's idempotency
   * claim, P246) then get at least its record's life, on every run, so a run that failed
   * half-way is made good by the next. A job's keys get the TTL at creation and no write renews
   * them, so without this a job running or waiting longer than JOB_TTL lost its record in
   * flight. Pages of `chunk` ids (default 500), each job on its own (a failure is thrown once
   * every job was tried); returns how many records were renewed. Costs a script call and up to
   * six PEXPIREs per live job per run, none on the job path.
   */
  renewLive(o?: { chunk?: number }): Promise<number>;
  /**
   * Gives job:fence:{id} the job TTL. The job lock's INCR creates the counter without one when
   * the job has no record (a submit or result for an expired or foreign id, or one that outlived
   * a Redis that lost its data); without this each such id would leave a key that never expires.
   */
  expireFence(id: string): Promise<void>;
  transition(id: string, to: JobState, o: TransitionOptions): Promise<TransitionResult>;
  markPublished(id: string, dispatchId: string, token: string, o?: MarkPublishedOptions): Promise<MarkPublishedResult>;
  /**
   * D14: idempotent; true when this call created the entry. Then calls `onDlq` unless
   * `notify` is false (the gateway's `sys.job.dlq` consumer, which must not echo a notice).
   * Writes nothing (false, no `onDlq`) for a job not in a DLQ state or failed at submit (D11,
   * `failedAtSubmit`).
   */
  writeDlq(job: JobRecord, reason?: string, o?: { notify?: boolean }): Promise<boolean>;
  getDlq(id: string): Promise<DlqEntry | null>;
  /**
   * P330: a terminal job that a redelivery found, whose record is still filed in an in-flight
   * index (`job:active:<state>`): its terminal write committed but its caller never got the reply
   * (a command timeout, a dropped socket), so none of the write's side effects ran. Runs them now
   * from that state: the DLQ entry, the index move and the D15 broadcast. true when it did; false
   * (nothing done) for a job not terminal or no longer filed in flight.
   */
  settleEnded(job: JobRecord): Promise<boolean>;
  /** D45: the scheduler sets EXPIRE on `res:<id>` once the job is terminal. */
  expireResult(job: JobRecord): Promise<void>;
  /**
   * P71: the bytes stored at the given keys (a job's own output keys, ownOutputKeys): a string's
   * length, another type's `MEMORY USAGE`; a missing key counts 0. Any other Redis error throws.
   */
  outputBytes(keys: readonly string[]): Promise<number>;
  /** P71: the job TTL on each key, ahead of a terminal write (D45), so a crash before dropOutputs leaves nothing that never expires. */
  expireOutputs(keys: readonly string[]): Promise<void>;
  /** P71: deletes the keys (a job's own output, refused for its size). */
  dropOutputs(keys: readonly string[]): Promise<void>;
  /** D13: due time (epoch ms) of a retry in `job:retry`, drained by the replayer leader. */
  scheduleRetry(id: string, dueAtMs: number): Promise<void>;
  /**
   * P338: removes the job's `job:retry` entry only while it is still due at `dueAtMs` (the score a
   * listing read); true when it did. An entry re-filed since (a new attempt's backoff) is left.
   */
  takeRetry(id: string, dueAtMs: number): Promise<boolean>;
  /** Safety decisions recorded for the job, oldest first (create + every transition that patched `safety`). */
  listDecisions(id: string): Promise<DecisionEntry[]>;
  /** Removes a DLQ entry and its index members; true when the entry existed. */
  deleteDlq(entry: DlqEntry): Promise<boolean>;
  /** Fenced field update that keeps the state (e.g. schedule_tries of a PENDING job); `state_mismatch` if it moved. */
  patchJob(id: string, state: JobState, o: { token: string; patch: JobPatch }): Promise<TransitionResult>;
  /**
   * DISPATCHED → RUNNING for a progress of `dispatchId` ('' = current attempt), atomically and only
   * while no job lock is held (mark-running-2.lua): fenced by the lock's absence instead of a token.
   */
  markRunning(id: string, dispatchId: string): Promise<MarkRunningResult>;
  /**
   * DISPATCHED/RUNNING → a terminal state for a worker's result of `dispatchId` ('' = current
   * attempt), atomically and only while no job lock is held (finish-2.lua), like markRunning.
   * From DISPATCHED the write goes through RUNNING (broadcast, not stored: the result shows the
   * job ran). `expireResult` as in TransitionOptions.
   */
  finish(id: string, to: JobState, o: { dispatchId: string; patch: JobPatch; expireResult?: boolean }): Promise<FinishResult>;
  /**
   * D1 (b): DISPATCHED → DISPATCHED with a new attempt, only if `replaces` is still the current
   * dispatch and no worker claimed it (reattempt-3.lua, atomic with worker-sdk's claim).
   */
  reattempt(id: string, replaces: string, o: { token: string; patch: JobPatch }): Promise<ReattemptResult>;
  /**
   * Before a TIMEOUT for "not started" (P49): true when no worker can claim attempt `attempt`
   * (`dispatchId`) any more, false when one already claimed it (it started: D1). Atomic with
   * worker-sdk's claim (fence-claim-1.lua).
   */
  fenceClaim(id: string, dispatchId: string, attempt: number): Promise<boolean>;
}

export interface DecisionEntry {
  decision: string;
  reason: string;
  rule_id: string;
  policy_snapshot: string;
  /** The state the decision led to (PENDING, SCHEDULED, APPROVAL_REQUIRED, DENIED, ...). */
  state: JobState;
  recorded_at: string;
}

/** Bound on the per-job history (a job is re-checked at most a handful of times). */
export const MAX_DECISIONS = 100;

type Reply = [number, ...unknown[]];

/** What create-n.lua answers when the submit's idempotency claim no longer names the job (P21). */
const CLAIM_LOST = -6;
const claimLost = (id: string): JobStoreError => new JobStoreError('claim_lost', `the idempotency claim no longer names job ${id}; nothing written`);

/** One sorted-set entry of a job (its member is the job id); `listing`: a D16 tenant index on the job TTL. */
interface IndexEntry {
  key: string;
  score: number;
  listing: boolean;
}

/** What dlq-set-2.lua answers for an entry an operator deleted (P22). */
const DLQ_DELETED = -1;

/** What the lock-free scripts (mark-running-2.lua, finish-2.lua) answer when they write nothing. */
const UNLOCKED_REFUSALS: Partial<Record<number, 'busy' | 'not_found' | 'state_mismatch' | 'stale_dispatch'>> = { 0: 'busy', [-1]: 'not_found', [-4]: 'state_mismatch', [-5]: 'stale_dispatch' };
/** finish-2.lua also leaves a bounded output to the locked path (P71). */
const FINISH_REFUSALS: Partial<Record<number, 'busy' | 'not_found' | 'state_mismatch' | 'stale_dispatch' | 'size_bound'>> = { ...UNLOCKED_REFUSALS, [-6]: 'size_bound' };

/** A dead job's keys that live as long as its DLQ entry (P74, P177) and no longer once it is deleted (P250). */
function deadJobKeys(id: string): string[] {
  return [jobKeys.meta(id), jobKeys.ctx(id), jobKeys.decisions(id), jobKeys.fence(id)];
}

/** JSON text (a record field as the scripts return it, a stored value) decoded; undefined when absent or not JSON. */
function parseJson(text: string | null | undefined): unknown {
  if (typeof text !== 'string') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export function createJobStore(redis: RedisClient, opts: JobStoreOptions): JobStore {
  const scripts: ScriptRunner = defineScripts(redis, [
    scriptSpec('create-n.lua', createLua),
    scriptSpec('transition-3.lua', transitionLua),
    scriptSpec('mark-published-2.lua', markPublishedLua),
    scriptSpec('reattempt-3.lua', reattemptLua),
    scriptSpec('fence-claim-1.lua', fenceClaimLua),
    scriptSpec('mark-running-2.lua', markRunningLua),
    scriptSpec('finish-2.lua', finishLua),
    scriptSpec('dlq-set-2.lua', dlqSetLua),
    scriptSpec('renew-live-4.lua', renewLiveLua),
    scriptSpec('retry-take-1.lua', retryTakeLua),
  ]);
  const now = opts.now ?? clusterNow;
  const ttl = opts.jobTtlMs;
  const dlqTtl = opts.dlqTtlMs ?? DLQ_TTL_MS;

  const notify = (job: JobRecord, from: JobState | null): void => {
    try {
      opts.onTransition?.(job, from);
    } catch {
      // A broadcast hook must never undo or fail a committed write.
    }
  };

  // Index updates span slots (tenant tag, global keys), so a transition's run after its atomic
  // write as idempotent commands, batched per event-loop turn (index-writer.ts); a crash in
  // between leaves the job in its old indexes too, which the replayer, the reconciler and the
  // index trimmer repair (D16). A create has no old index to be found in, so its entries go
  // with the record (standalone) or before it (cluster): see createJob.
  const indexes = createIndexWriter(redis, now);

  /**
   * The index entries a new record gets: the D16 listing indexes (kept on the job TTL), the
   * deadline index, and the in-flight index the replayer finds lost submits in (D13). createJob
   * writes them with the record (standalone) or before it (cluster), never after.
   */
  function createEntries(job: JobRecord): IndexEntry[] {
    const out: IndexEntry[] = [
      { key: jobKeys.indexState(job.tenant, job.state), score: job.createdAt, listing: true },
      { key: jobKeys.indexAll(job.tenant), score: job.createdAt, listing: true },
    ];
    if (job.deadlineAt !== undefined && !TERMINAL_STATES.has(job.state)) out.push({ key: jobKeys.deadline(), score: job.deadlineAt, listing: false });
    if (ACTIVE_STATES.has(job.state)) out.push({ key: jobKeys.active(job.state), score: job.updatedAt, listing: false });
    return out;
  }

  function moveIndex(job: JobRecord, from: JobState | null): Promise<void> {
    return indexes.write((ops) => {
      if (!from) {
        // A retried create: put back whatever an earlier, half-done create of this record missed.
        for (const e of createEntries(job)) ops.add(e.key, e.score, job.id, e.listing ? ttl : undefined);
      } else {
        if (from !== job.state) ops.rem(jobKeys.indexState(job.tenant, from), job.id);
        ops.add(jobKeys.indexState(job.tenant, job.state), job.createdAt, job.id, ttl);
        // Global in-flight indexes (scored by state entry): added before the old one is removed
        // (the writer sends every ZADD first), so a crash leaves the job in two indexes, never in none.
        if (ACTIVE_STATES.has(job.state)) ops.add(jobKeys.active(job.state), job.updatedAt, job.id);
        // P274, P292: another writer may have moved the job back into `from` since; its entry comes back.
        if (from !== job.state && ACTIVE_STATES.has(from)) ops.rem(jobKeys.active(from), job.id, { meta: jobKeys.meta(job.id), state: from });
      }
      if (TERMINAL_STATES.has(job.state)) {
        // Only jobs that had a deadline or ever waited for a retry can be in these ZSETs; a stale
        // `job:retry` member would anyway be dropped by the replayer's next turn.
        if (job.deadlineAt !== undefined || job.maxRuntimeMs !== undefined) ops.rem(jobKeys.deadline(), job.id);
        if (mayHaveRetry(job) || from === 'RETRYING') ops.rem(jobKeys.retry(), job.id);
        // P70: the slot it held, or its place in the queue for one, goes back.
        if (job.concurrency) {
          ops.rem(jobKeys.slots(job.concurrency.group), job.id);
          ops.rem(jobKeys.slotWaiters(job.concurrency.group), job.id);
        }
      }
    });
  }

  // The history entry of a record's latest decision, appended inside the record's script.
  const decisionEntry = (job: JobRecord): string => {
    if (!job.safety) return '';
    const e: DecisionEntry = {
      decision: job.safety.decision,
      reason: job.safety.reason,
      rule_id: job.safety.ruleId,
      policy_snapshot: job.safety.policySnapshot,
      state: job.state,
      recorded_at: new Date(job.updatedAt).toISOString(),
    };
    return JSON.stringify(e);
  };

  /**
   * Resolves once a command sent next will run after `sent` in Redis. On standalone Redis that
   * holds as soon as it is sent: one connection, run in order, no round trip of its own (issue 7).
   * A cluster client may send the two to different nodes (other slots, or the same slot while its
   * slot map lacks it: ioredis then picks a random master), so there it waits for `sent`'s reply.
   * The caller awaits `sent` itself for its reply or error.
   */
  async function sentInOrder(sent: Promise<unknown>): Promise<void> {
    if (redis.isCluster) await sent;
  }

  /** A command sent so that it runs before the caller's next one; the caller awaits `done` after its write. */
  async function ahead(done: Promise<unknown>): Promise<{ done: Promise<unknown> }> {
    done.catch(() => undefined); // awaited by the caller; not an unhandled rejection if its write throws first
    await sentInOrder(done);
    return { done };
  }

  /** The job TTL on each key, one command per key (they may sit in different slots). */
  const expireKeys = async (keys: readonly string[]): Promise<void> => {
    await Promise.all(keys.map((k) => redis.pexpire(k, ttl)));
  };

  /**
   * P250: a dead job's record, input, history and fence live as long as its DLQ entry only so it
   * can be retried (P74); once the entry is deleted they keep the job TTL from the job's end, as
   * any ended job's (LT: never lengthened; a time already past removes them now).
   */
  const endDeadLife = async (id: string, endedAtMs: number): Promise<void> => {
    await Promise.all(deadJobKeys(id).map((k) => redis.pexpireat(k, endedAtMs + ttl, 'LT')));
  };

  /** D45 ahead of a terminal write, in order before it. */
  const expireAhead = (key: string): Promise<{ done: Promise<unknown> }> => ahead(redis.pexpire(key, ttl));

  async function writeDlq(job: JobRecord, reason?: string, o: { notify?: boolean } = {}): Promise<boolean> {
    if (!DLQ_STATES.has(job.state)) return false;
    // D11: a job failed at submit never gets an entry. Every DLQ write goes through here (a
    // transition's side writes, repairIndex, a redelivered submit's re-run, the sys.job.dlq
    // consumer), so none of them can file one, and no sys.job.dlq notice goes out for it.
    if (failedAtSubmit(job.state, job.error?.code, job.attempts)) return false;
    // One absolute end, DLQ_TTL from the job's end, for the entry and what a retry reads. A re-run
    // past it (a late result, a repeated reject, a duplicate submit: the record outlives the entry
    // when DLQ_TTL < JOB_TTL, P238) files nothing: an entry that expired, or whose tombstone did,
    // came back with a fresh DLQ_TTL, and could be retried into a second job (P304).
    const endedAt = job.finishedAt ?? now();
    const keepUntil = endedAt + dlqTtl;
    if (keepUntil <= now()) return false;
    const entry: DlqEntry = {
      job_id: job.id,
      tenant: job.tenant,
      topic: job.topic,
      // Cut as any error text from outside (P73): a sys.job.dlq notice's reason is a bus packet's (P328).
      reason: boundedError('', reason ?? job.error?.message ?? job.safety?.reason ?? job.state.toLowerCase()).message,
      reason_code: job.error?.code ?? defaultReasonCode(job.state),
      last_state: job.state,
      attempts: job.attempts,
      created_at: new Date(endedAt).toISOString(),
    };
    // An entry an operator deleted stays deleted: the tombstone is checked in the same script (P22).
    const written = await scripts.run<number>('dlq-set', [jobKeys.dlqEntry(job.id), jobKeys.dlqDeleted(job.id)], [JSON.stringify(entry), keepUntil]);
    if (written === DLQ_DELETED) return false;
    // What a retry reads (the record, its input) and the history beside it live as long as the
    // entry, not just the job TTL, so the entry stays retryable for its DLQ_TTL (P74; 30 d by
    // default, P238). The entry's own absolute time (keepUntil), so a re-run (a redelivered
    // result, a late notice) never moves it; GT never shortens a TTL.
    // The fence too (P177): expired at the job TTL under a record kept DLQ_TTL, a later lock's INCR
    // created it again with no TTL, and with the record there nothing gave it one (P30).
    const kept = Promise.all(deadJobKeys(job.id).map((k) => redis.pexpireat(k, keepUntil, 'GT')));
    kept.catch(() => undefined); // awaited below; not an unhandled rejection if a ZADD throws first
    await redis.zadd(jobKeys.dlqIndex(), 'NX', endedAt, job.id);
    const tenantIndex = jobKeys.dlqIndexTenant(job.tenant);
    // The PEXPIRE must run after the ZADD that may create the key: on a missing key it is a no-op.
    const added = redis.zadd(tenantIndex, 'NX', endedAt, job.id);
    await sentInOrder(added);
    await Promise.all([added, redis.pexpire(tenantIndex, dlqTtl), kept]);
    // A delete of the entry that came after our tombstone check shortened these keys again; its
    // tombstone is written before that, so seen here if our GT could have landed after it (P250).
    if ((await redis.exists(jobKeys.dlqDeleted(job.id))) === 1) await endDeadLife(job.id, endedAt);
    // Registered for the retention leader (retention.ts, P89); best effort: a re-run of this
    // write, or any later DLQ write of the tenant, registers it again.
    await redis.zadd(jobKeys.indexRegistry(), now(), tenantIndex).catch(() => undefined);
    if (o.notify !== false && opts.onDlq) {
      try {
        opts.onDlq(job, entry);
      } catch {
        // A notification hook must never fail a committed write.
      }
    }
    return written === 1;
  }

  /**
   * What follows a committed write of `job` out of `from`: the index moves, the DLQ entry of a
   * DLQ state (awaited, or pushed onto `sideWrites`), and the broadcasts (the `via` step first,
   * when the write went through one). A create (`from` null) broadcasts in createJob, and only
   * when it created the record.
   */
  async function afterWrite(job: JobRecord, from: JobState | null, o: { via?: JobState; dlqReason?: string; sideWrites?: Promise<void>[]; indexed?: IndexEntry[] } = {}): Promise<void> {
    const side = sideWritesOf(job, from, o.dlqReason, o.indexed);
    if (o.sideWrites) {
      side.catch(() => undefined); // the caller awaits it; not an unhandled rejection if it gives up first
      o.sideWrites.push(side);
    }
    try {
      if (!o.sideWrites) await side;
    } finally {
      // The record's write committed: it is broadcast (D15) even when its index or DLQ side
      // writes failed (P144), as nothing that repairs those later broadcasts it.
      if (from !== null) {
        if (o.via) notify({ ...job, state: o.via }, from);
        notify(job, o.via ?? from);
      }
    }
  }

  /**
   * `indexed`: a new record's entries, already written: only the listing keys' TTLs are left.
   * A DLQ state's entry goes before the index move (P38): the job leaves its in-flight index only
   * once its entry exists, so a crash or a Redis error between the write and its entry leaves the
   * job where the reconciler's and the replayer's sweeps find it, and their repairIndex writes the
   * entry. Paths with a message to redeliver (intake, results) re-run it on redelivery too.
   */
  async function sideWritesOf(job: JobRecord, from: JobState | null, dlqReason?: string, indexed?: IndexEntry[]): Promise<void> {
    if (DLQ_STATES.has(job.state)) await writeDlq(job, dlqReason);
    if (indexed) {
      await indexes.write((ops) => {
        for (const e of indexed) if (e.listing) ops.expire(e.key, ttl);
      });
    } else {
      await moveIndex(job, from);
    }
  }

  const scans = createJobScans(redis);
  return {
    ...scans,
    ...createJobSlots(redis, ttl, now),
    async repairIndex(id, seenIn, job) {
      if (job && DLQ_STATES.has(job.state)) await writeDlq(job);
      await scans.repairIndex(id, seenIn, job);
      // P330: a job found ended while still filed in flight may have ended by a write whose reply
      // was lost (a reconciler's TIMEOUT, a gateway's cancel), which nothing broadcast. Broadcast
      // it now: a client may see its end twice (the write's side writes failed after a broadcast),
      // never not at all.
      if (job && TERMINAL_STATES.has(job.state) && ACTIVE_STATES.has(seenIn)) notify(job, seenIn);
    },
    async settleEnded(job) {
      if (!TERMINAL_STATES.has(job.state)) return false;
      const states = [...ACTIVE_STATES];
      const filed = await Promise.all(states.map((st) => redis.zscore(jobKeys.active(st), job.id)));
      const from = states[filed.findIndex((score) => score !== null)];
      if (from === undefined) return false;
      await afterWrite(job, from);
      return true;
    },
    async createJob(j, o = {}) {
      // createdAt: the request's arrival (P321); updatedAt: this write, which the in-flight index is
      // scored by and a waiting duplicate's settle window counts from (P325).
      const written = now();
      const createdAt = Math.min(j.submittedAt ?? Number.POSITIVE_INFINITY, written);
      const ctx = { prompt: j.prompt, context: j.context ?? null, topic: j.topic, tenant_id: j.tenant, priority: j.priority, created_at: new Date(createdAt).toISOString() };
      // ctx first, NX: a record never points at a missing ctx, and a retried create never rewrites the input.
      const ctxWritten = redis.set(jobKeys.ctx(j.id), JSON.stringify(ctx), 'PX', ttl, 'NX');
      await sentInOrder(ctxWritten);
      const terminal = TERMINAL_STATES.has(j.initialState);
      const rec: JobRecord = {
        id: j.id,
        tenant: j.tenant,
        topic: j.topic,
        state: j.initialState,
        traceId: j.traceId,
        priority: j.priority,
        labels: j.labels,
        attempts: 0,
        contextPtr: jobKeys.ctxPtr(j.id),
        principalId: j.principalId,
        actorId: j.actorId,
        actorType: j.actorType,
        capability: j.capability,
        riskTags: j.riskTags,
        requires: j.requires,
        memoryId: j.memoryId,
        contextMode: j.contextMode,
        idempotencyKey: j.idempotencyKey,
        submitState: j.idempotencyKey !== undefined ? j.initialState : undefined,
        retriedFrom: j.retriedFrom,
        deadlineAt: j.deadlineMs !== undefined ? createdAt + j.deadlineMs : undefined,
        safety: j.safety,
        error: j.initialState === 'DENIED' ? { code: 'policy_denied', message: j.safety?.reason || 'denied by policy' } : undefined,
        scheduleTries: 0,
        createdAt,
        updatedAt: written,
        finishedAt: terminal ? written : undefined,
      };
      if (j.initialState === 'APPROVAL_REQUIRED') rec.holdHash = jobRequestHash(rec, { prompt: j.prompt, context: j.context ?? null });
      const fields = encodeFields(rec);
      // The record as Redis will hold it (undefined fields dropped, JSON round trip).
      const built = decodeFields(fields);
      // The new record's index entries: inside the create script on standalone Redis, so the
      // record and its entries exist together or not at all; on a cluster (other slots) written
      // first, ZADD NX so a retried create keeps the first scores. Either way a gateway that dies
      // right after the create leaves a job the replayer finds (D13), not an unlisted orphan.
      const entries = createEntries(built);
      const inScript = !redis.isCluster;
      if (!inScript) {
        // The claim lives in another slot: read just before the create (a pause between the two
        // can still let a replacement through there; on standalone the script checks it).
        if (o.claim !== undefined && (await redis.get(o.claim)) !== j.id) throw claimLost(j.id);
        await Promise.all(entries.map((e) => redis.zadd(e.key, 'NX', e.score, j.id)));
      }
      const keys = [jobKeys.meta(j.id), jobKeys.fence(j.id), jobKeys.decisions(j.id)];
      const args: (string | number)[] = [ttl, decisionEntry(built), inScript ? entries.length : 0, j.id, inScript && o.claim !== undefined ? '1' : '', inScript ? (o.claimMark ?? '') : ''];
      if (inScript) {
        for (const e of entries) {
          keys.push(e.key);
          args.push(e.score);
        }
        if (o.claim !== undefined) keys.push(o.claim);
      }
      for (const v of flatFields(fields)) args.push(v);
      const [, reply] = await Promise.all([ctxWritten, scripts.run<Reply>('create', keys, args)]);
      if (Number(reply[0]) === CLAIM_LOST) throw claimLost(j.id);
      const created = Number(reply[0]) === 1;
      const job = created ? built : decodeFlat(reply[1]);
      if (!job) throw new JobStoreError('unexpected_reply', `create returned no record for ${j.id}`);
      // Side effects are idempotent, so a retried create repairs a half-done earlier one.
      await afterWrite(job, null, { sideWrites: o.sideWrites, indexed: created ? entries : undefined });
      if (created) notify(job, null);
      return job;
    },

    async getJob(id) {
      const h = await redis.hgetall(jobKeys.meta(id));
      const flat = Object.entries(h).flat();
      return decodeFlat(flat);
    },

    async readResult(job) {
      const result = await readJson(redis, resultKey(job.id, job.resultPtr));
      // P269: parsing JSON is not recursive in V8, serialising it is: a worker's output nested
      // thousands deep would make every answer that carries it throw (500). Such a result reads as
      // none; its bytes stay at result_ptr.
      return nestedDeeperThan(result, MAX_RESULT_DEPTH) ? null : result;
    },

    async readContext(id) {
      return readJson(redis, jobKeys.ctx(id));
    },

    async requestHash(job) {
      const input = (await readJson(redis, jobKeys.ctx(job.id))) as StoredInput | null;
      return jobRequestHash(job, input);
    },

    async refreshLifetime({ id, tenant, idempotencyKey }) {
      // One command per key: ctx: and the claim are in other slots than the record's hash tag.
      const keys = [jobKeys.ctx(id), jobKeys.meta(id), jobKeys.fence(id), jobKeys.decisions(id)];
      if (idempotencyKey !== undefined) keys.push(jobKeys.idempotency(tenant, idempotencyKey));
      await expireKeys(keys);
    },

    async renewLive(o = {}) {
      const chunk = o.chunk ?? 500;
      const below = String(Math.floor(ttl / 2));
      let renewed = 0;
      let failure: unknown;
      /** One job: its record's keys (one script), then its keys in other slots, at least as long as the record. */
      const renew = async (id: string): Promise<void> => {
        const reply = await scripts.run<[number, number?, string?, string?, string?, string?]>('renew-live', [jobKeys.meta(id), jobKeys.fence(id), jobKeys.decisions(id), jobKeys.workerClaim(id)], [String(ttl), below]);
        const [status, left, state, tenantJson, concurrencyJson, keyJson] = reply;
        if (status === 0 || left === undefined || state === undefined || !isJobState(state)) return;
        if (status === 1) renewed += 1;
        const keys = [jobKeys.ctx(id)];
        const tenant = parseJson(tenantJson);
        if (typeof tenant === 'string') keys.push(jobKeys.indexAll(tenant), jobKeys.indexState(tenant, state));
        // P246: the submit's idempotency claim (D25), so a client repeating the submit while the
        // job still runs gets this job, not a second run. A claim that names another job by now
        // (this one's expired and the key was taken again) only lives as long as this record.
        const key = parseJson(keyJson);
        if (typeof tenant === 'string' && typeof key === 'string') keys.push(jobKeys.idempotency(tenant, key));
        const concurrency = parseJson(concurrencyJson) as { group?: unknown } | undefined;
        if (typeof concurrency?.group === 'string') keys.push(jobKeys.slots(concurrency.group), jobKeys.slotWaiters(concurrency.group));
        await Promise.all(keys.map((k) => redis.pexpire(k, left, 'GT')));
      };
      for (const state of ACTIVE_STATES) {
        // By rank, not score: members are only read, and one that moves between pages meanwhile
        // is renewed by the next run (runs come every eighth of the TTL, P244).
        for (let start = 0; ; start += chunk) {
          const ids = await redis.zrange(jobKeys.active(state), String(start), String(start + chunk - 1));
          // Each job settles on its own: one that fails (a node failing over) keeps no other from
          // being renewed, and the run reports the first failure once every job was tried.
          for (const r of await Promise.allSettled(ids.map(renew))) {
            if (r.status === 'rejected' && failure === undefined) failure = r.reason;
          }
          if (ids.length < chunk) break;
        }
      }
      if (failure !== undefined) throw failure instanceof Error ? failure : new Error(String(failure));
      return renewed;
    },

    async expireFence(id) {
      await redis.pexpire(jobKeys.fence(id), ttl);
    },

    async transition(id, to, o) {
      const t = now();
      const patch: JobPatch = { ...(o.patch ?? {}) };
      if (TERMINAL_STATES.has(to) && patch.finishedAt === undefined) patch.finishedAt = t;
      const fields = encodeFields(patch as Partial<JobRecord>);
      const cur = o.current?.id === id ? o.current : undefined;
      // The history entry is built from the record as it will stand; the state and time are known.
      const entry = o.patch?.safety ? decisionEntry({ ...(cur ?? ({ id } as JobRecord)), safety: o.patch.safety, state: o.via ?? to, updatedAt: t }) : '';
      const expired = (o.expireResult ?? TERMINAL_STATES.has(to)) ? await expireAhead(resultKey(id, patch.resultPtr ?? cur?.resultPtr) ?? jobKeys.res(id)) : undefined;
      // Into an in-flight state from outside them (an approval: APPROVAL_REQUIRED → PENDING) no old
      // in-flight entry would be left by a crash before the index move, so the new one goes first
      // (decisions.md P20); if the script refuses, the replayer drops the entry where it reads it.
      const entering = ACTIVE_STATES.has(to) && (o.from ?? []).some((f) => !ACTIVE_STATES.has(f));
      const listed = entering ? await ahead(redis.zadd(jobKeys.active(to), t, id)) : undefined;
      const reply = await scripts.run<Reply>(
        'transition',
        [jobKeys.meta(id), jobKeys.lock(id), jobKeys.decisions(id)],
        [
          o.token, (o.from ?? []).join(','), to, t, allowedSources(to).join(','), cur ? JSON.stringify(cur.updatedAt) : '', o.release ? '1' : '', entry, ttl,
          o.via ?? '', o.via ? allowedSources(o.via).join(',') : '', ...flatFields(fields),
        ],
      );
      const code = Number(reply[0]);
      // A pipelined write sent ahead (standalone) that failed once the transition committed: marked as after it (P258).
      await Promise.all([expired?.done, listed?.done]).catch((err: unknown) => {
        throw code === 1 ? markCommitted(err) : err;
      });
      if (code !== 1) {
        const current = decodeFlat(reply[2]) ?? undefined;
        return { ok: false, reason: failureFromCode(code), current };
      }
      const from = String(reply[1]) as JobState;
      const job = reply.length > 2 ? decodeFlat(reply[2]) : cur ? { ...withFields(cur, fields), state: to, updatedAt: t } : null;
      if (!job) throw new JobStoreError('unexpected_reply', `transition returned no record for ${id}`);
      // P258: the transition stands whatever follows; a caller answering a client must know it.
      await afterWrite(job, from, { via: o.via, dlqReason: o.dlqReason, sideWrites: o.sideWrites }).catch((err: unknown) => {
        throw markCommitted(err);
      });
      return { ok: true, job, from };
    },

    async markPublished(id, dispatchId, token, o = {}) {
      const t = now();
      const cur = o.current?.id === id ? o.current : undefined;
      const reply = await scripts.run<Reply>('mark-published', [jobKeys.meta(id), jobKeys.lock(id)], [token, dispatchId, t, cur ? JSON.stringify(cur.updatedAt) : '', o.release ? '1' : '']);
      const code = Number(reply[0]);
      const job = reply.length > 1 ? (decodeFlat(reply[1]) ?? undefined) : cur?.dispatch ? { ...cur, dispatch: { ...cur.dispatch, published: true }, updatedAt: t } : undefined;
      if (code === 1 && job) return { ok: true, job };
      const reason = failureFromCode(code);
      if (reason === 'illegal_transition') throw new JobStoreError('unexpected_reply', 'mark-published cannot be illegal');
      return { ok: false, reason, current: job };
    },

    writeDlq,

    async getDlq(id) {
      return (await readJson(redis, jobKeys.dlqEntry(id))) as DlqEntry | null;
    },

    async outputBytes(keys) {
      const size = async (k: string): Promise<number> => {
        try {
          return await redis.strlen(k);
        } catch (err) {
          if (!isWrongType(err)) throw err;
          return Number(await redis.call('MEMORY', 'USAGE', k)) || 0;
        }
      };
      const sizes = await Promise.all(keys.map(size));
      return sizes.reduce((a, n) => a + n, 0);
    },

    async expireOutputs(keys) {
      await expireKeys(keys);
    },

    async dropOutputs(keys) {
      await Promise.all(keys.map((k) => redis.del(k)));
    },

    async expireResult(job) {
      const key = resultKey(job.id, job.resultPtr) ?? jobKeys.res(job.id);
      await redis.pexpire(key, ttl);
    },

    async scheduleRetry(id, dueAtMs) {
      await redis.zadd(jobKeys.retry(), dueAtMs, id);
    },

    async takeRetry(id, dueAtMs) {
      return (await scripts.run<number>('retry-take', [jobKeys.retry()], [id, String(dueAtMs)])) === 1;
    },

    async listDecisions(id) {
      const raw = await redis.lrange(jobKeys.decisions(id), 0, -1);
      const out: DecisionEntry[] = [];
      for (const r of raw) {
        try {
          out.push(JSON.parse(r) as DecisionEntry);
        } catch {
          // Fails open: a corrupt history entry is skipped, the record's safety still answers.
        }
      }
      return out;
    },

    async deleteDlq(entry) {
      // The tombstone first: a write re-run from here on finds it (P22).
      await redis.set(jobKeys.dlqDeleted(entry.job_id), '1', 'PX', dlqTtl);
      const ended = Date.parse(entry.created_at);
      const id = entry.job_id;
      const [deleted] = await Promise.all([
        redis.del(jobKeys.dlqEntry(id)),
        redis.zrem(jobKeys.dlqIndex(), id),
        redis.zrem(jobKeys.dlqIndexTenant(entry.tenant), id),
        endDeadLife(id, Number.isFinite(ended) ? ended : now()),
      ]);
      return deleted === 1;
    },

    async patchJob(id, state, o) {
      const args = [o.token, state, state, now(), state, '', '', '', ttl, '', '', ...flatFields(encodeFields(o.patch as Partial<JobRecord>))];
      const reply = await scripts.run<Reply>('transition', [jobKeys.meta(id), jobKeys.lock(id), jobKeys.decisions(id)], args);
      const code = Number(reply[0]);
      if (code !== 1) return { ok: false, reason: failureFromCode(code), current: decodeFlat(reply[2]) ?? undefined };
      const job = decodeFlat(reply[2]);
      if (!job) throw new JobStoreError('unexpected_reply', `patch returned no record for ${id}`);
      return { ok: true, job, from: state };
    },

    async markRunning(id, dispatchId) {
      const reply = await scripts.run<Reply>('mark-running', [jobKeys.meta(id), jobKeys.lock(id)], [dispatchId, now()]);
      const code = Number(reply[0]);
      const refused = UNLOCKED_REFUSALS[code];
      if (refused === 'state_mismatch' || refused === 'stale_dispatch') return { ok: false, reason: refused, state: (typeof reply[1] === 'string' ? reply[1] : '') as JobState };
      if (refused) return { ok: false, reason: refused };
      const job = decodeFlat(reply[1]);
      if (code !== 1 || !job) throw new JobStoreError('unexpected_reply', `mark-running returned ${code} for ${id}`);
      await afterWrite(job, 'DISPATCHED');
      return { ok: true, job };
    },

    async finish(id, to, o) {
      if (!TERMINAL_STATES.has(to)) throw new JobStoreError('invalid_argument', `finish needs a terminal state, got ${to}`);
      // finish-2.lua writes from RUNNING (or DISPATCHED through RUNNING): the target must be one the
      // transition table (D12) allows from RUNNING, e.g. never DENIED, which only a decision makes.
      if (!canTransition('RUNNING', to)) throw new JobStoreError('invalid_argument', `finish cannot end a running job ${to} (D12)`);
      const t = now();
      const patch: JobPatch = { ...o.patch, finishedAt: o.patch.finishedAt ?? t };
      const expired = (o.expireResult ?? true) ? await expireAhead(resultKey(id, patch.resultPtr ?? undefined) ?? jobKeys.res(id)) : undefined;
      const reply = await scripts.run<Reply>('finish', [jobKeys.meta(id), jobKeys.lock(id)], [to, o.dispatchId, t, ...flatFields(encodeFields(patch as Partial<JobRecord>))]);
      await expired?.done;
      const code = Number(reply[0]);
      const refused = FINISH_REFUSALS[code];
      if (refused) return { ok: false, reason: refused };
      const job = decodeFlat(reply[2]);
      if (code !== 1 || !job) throw new JobStoreError('unexpected_reply', `finish returned ${code} for ${id}`);
      const from = String(reply[1]) as JobState;
      await afterWrite(job, from, { via: from === 'DISPATCHED' ? 'RUNNING' : undefined });
      return { ok: true, job, from };
    },

    async reattempt(id, replaces, o) {
      const t = now();
      const reply = await scripts.run<Reply>('reattempt', [jobKeys.meta(id), jobKeys.lock(id), jobKeys.workerClaim(id)], [o.token, replaces, encodePatch(o.patch), t]);
      const code = Number(reply[0]);
      const job = decodeFlat(reply[1]) ?? undefined;
      if (code === 1 && job) {
        await afterWrite(job, 'DISPATCHED');
        return { ok: true, job };
      }
      if (code === -5) return { ok: false, reason: 'claimed', current: job };
      const reason = failureFromCode(code);
      if (reason === 'illegal_transition') throw new JobStoreError('unexpected_reply', 'reattempt cannot be illegal');
      return { ok: false, reason, current: job };
    },

    async fenceClaim(id, dispatchId, attempt) {
      return Number(await scripts.run<number>('fence-claim', [jobKeys.workerClaim(id)], [dispatchId, attempt, ttl])) === 1;
    },
  };
}

/** Whether `job:retry` can hold the job: it waited for a worker, was refused busy or retried (a RETRYING job is always there, P140: its callers also check the state it left). */
function mayHaveRetry(job: JobRecord): boolean {
  return (job.scheduleTries ?? 0) > 0 || (job.busyRefusals ?? 0) > 0 || job.attempts > 1;
}

function defaultReasonCode(state: JobState): string {
  if (state === 'DENIED') return 'policy_denied';
  if (state === 'TIMEOUT') return 'timeout';
  return 'failed';
}

/** How deep a result read for an answer may nest (objects and arrays); JSON.stringify throws past about 4,000. */
export const MAX_RESULT_DEPTH = 1_000;

/** True when `value` nests objects and arrays more than `limit` deep (a walk without recursion). */
function nestedDeeperThan(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [node, depth] = top;
    if (node === null || typeof node !== 'object') continue;
    if (depth >= limit) return true;
    for (const v of Array.isArray(node) ? (node as unknown[]) : Object.values(node)) stack.push([v, depth + 1]);
  }
  return false;
}

/**
 * JSON at `key`; null when absent, not a string or unparseable (fails open: a missing or
 * malformed result is not an error). Other Redis errors throw.
 */
async function readJson(redis: RedisClient, key: string | null): Promise<unknown> {
  if (!key) return null;
  let raw: string | null;
  try {
    raw = await redis.get(key);
  } catch (err) {
    if (isWrongType(err)) return null;
    throw err;
  }
  return parseJson(raw) ?? null;
}
