import { defineScripts, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import createLua from './lua/create-2.lua';
import transitionLua from './lua/transition-2.lua';
import markPublishedLua from './lua/mark-published-2.lua';
import reattemptLua from './lua/reattempt-3.lua';
import { decodeFlat, encodeFields, encodePatch } from './codec';
import { failureFromCode, JobStoreError } from './errors';
import { jobKeys, pointerKey } from './keys';
import { ACTIVE_STATES, allowedSources, DLQ_STATES, TERMINAL_STATES, type JobState } from './states';
import { createJobScans, type JobScans } from './scans';
import { jobRequestHash, type StoredInput } from './approval';
import type { DlqEntry, JobPatch, JobRecord, NewJob, TransitionResult } from './types';

export const DLQ_TTL_MS = 30 * 24 * 3600 * 1000; // D45

export interface JobStoreOptions {
  jobTtlMs: number;
  /** Called after every committed transition (and after a create); the scheduler publishes sys.job.state from it (D15). Must not throw. */
  onTransition?: (job: JobRecord, from: JobState | null) => void;
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
}

export type MarkPublishedResult = { ok: true; job: JobRecord } | { ok: false; reason: 'not_found' | 'fenced' | 'state_mismatch'; current?: JobRecord };

export type ReattemptResult =
  | { ok: true; job: JobRecord }
  /** `claimed`: a worker claimed the old attempt, so it started (D1): never redispatch it. */
  | { ok: false; reason: 'not_found' | 'fenced' | 'state_mismatch' | 'claimed'; current?: JobRecord };

export interface JobStore extends JobScans {
  createJob(j: NewJob): Promise<JobRecord>;
  getJob(id: string): Promise<JobRecord | null>;
  readResult(job: JobRecord): Promise<unknown>;
  readContext(id: string): Promise<unknown>;
  /** D18: jobRequestHash() of the record and its stored input (ctx:<id>). */
  requestHash(job: JobRecord): Promise<string>;
  /** D45: ctx:<id> lives another job TTL (refreshed on approval). */
  refreshContext(id: string): Promise<void>;
  transition(id: string, to: JobState, o: TransitionOptions): Promise<TransitionResult>;
  markPublished(id: string, dispatchId: string, token: string): Promise<MarkPublishedResult>;
  /** D14: idempotent; true when this call created the entry. */
  writeDlq(job: JobRecord, reason?: string): Promise<boolean>;
  getDlq(id: string): Promise<DlqEntry | null>;
  /** D45: the scheduler sets EXPIRE on `res:<id>` once the job is terminal. */
  expireResult(job: JobRecord): Promise<void>;
  /** D13: due time (epoch ms) of a retry in `job:retry`, drained by the replayer leader. */
  scheduleRetry(id: string, dueAtMs: number): Promise<void>;
  /** Safety decisions recorded for the job, oldest first (create + every transition that patched `safety`). */
  listDecisions(id: string): Promise<DecisionEntry[]>;
  /** Removes a DLQ entry and its index members; true when the entry existed. */
  deleteDlq(entry: DlqEntry): Promise<boolean>;
  /** Fenced field update that keeps the state (e.g. schedule_tries of a PENDING job); `state_mismatch` if it moved. */
  patchJob(id: string, state: JobState, o: { token: string; patch: JobPatch }): Promise<TransitionResult>;
  /**
   * D1 (b): DISPATCHED → DISPATCHED with a new attempt, only if `replaces` is still the current
   * dispatch and no worker claimed it (reattempt-3.lua, atomic with worker-sdk's claim).
   */
  reattempt(id: string, replaces: string, o: { token: string; patch: JobPatch }): Promise<ReattemptResult>;
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

export function createJobStore(redis: RedisClient, opts: JobStoreOptions): JobStore {
  const scripts: ScriptRunner = defineScripts(redis, [
    scriptSpec('create-2.lua', createLua),
    scriptSpec('transition-2.lua', transitionLua),
    scriptSpec('mark-published-2.lua', markPublishedLua),
    scriptSpec('reattempt-3.lua', reattemptLua),
  ]);
  const now = opts.now ?? Date.now;
  const ttl = opts.jobTtlMs;

  const notify = (job: JobRecord, from: JobState | null): void => {
    try {
      opts.onTransition?.(job, from);
    } catch {
      // A broadcast hook must never undo or fail a committed write.
    }
  };

  // Index updates span slots (tenant tag), so they run after the atomic write as
  // idempotent commands; a crash in between leaves an index one step behind,
  // which the index trimmer / lists tolerate (D16).
  // Every command promise is awaited through Promise.all before anything else is
  // awaited: a command that was started and then abandoned because an earlier await
  // threw (e.g. all of them timing out after a SIGSTOP/SIGCONT) would reject unhandled
  // and kill the process.
  async function moveIndex(job: JobRecord, from: JobState | null): Promise<void> {
    const first: Promise<unknown>[] = [];
    if (from && from !== job.state) first.push(redis.zrem(jobKeys.indexState(job.tenant, from), job.id));
    const stateKey = jobKeys.indexState(job.tenant, job.state);
    first.push(redis.zadd(stateKey, job.createdAt, job.id), redis.pexpire(stateKey, ttl));
    if (!from) {
      const allKey = jobKeys.indexAll(job.tenant);
      first.push(redis.zadd(allKey, job.createdAt, job.id), redis.pexpire(allKey, ttl));
      if (job.deadlineAt !== undefined && !TERMINAL_STATES.has(job.state)) first.push(redis.zadd(jobKeys.deadline(), job.deadlineAt, job.id));
    }
    // Global in-flight indexes (scored by state entry): the new one is added before the old one is
    // removed, so a crash in between leaves the job in two indexes (a scan repairs it), never in none.
    if (ACTIVE_STATES.has(job.state)) first.push(redis.zadd(jobKeys.active(job.state), job.updatedAt, job.id));
    await Promise.all(first);
    const then: Promise<unknown>[] = [];
    if (from && from !== job.state && ACTIVE_STATES.has(from)) then.push(redis.zrem(jobKeys.active(from), job.id));
    if (TERMINAL_STATES.has(job.state)) then.push(redis.zrem(jobKeys.deadline(), job.id), redis.zrem(jobKeys.retry(), job.id));
    await Promise.all(then);
  }

  // After the atomic write, like the indexes: a crash in between loses one history entry,
  // never the record's own `safety` (the authoritative latest decision).
  async function recordDecision(job: JobRecord): Promise<void> {
    if (!job.safety) return;
    const e: DecisionEntry = {
      decision: job.safety.decision,
      reason: job.safety.reason,
      rule_id: job.safety.ruleId,
      policy_snapshot: job.safety.policySnapshot,
      state: job.state,
      recorded_at: new Date(job.updatedAt).toISOString(),
    };
    const key = jobKeys.decisions(job.id);
    await redis.multi().rpush(key, JSON.stringify(e)).ltrim(key, -MAX_DECISIONS, -1).pexpire(key, ttl).exec();
  }

  async function writeDlq(job: JobRecord, reason?: string): Promise<boolean> {
    if (!DLQ_STATES.has(job.state)) return false;
    const entry: DlqEntry = {
      job_id: job.id,
      tenant: job.tenant,
      topic: job.topic,
      reason: reason ?? job.error?.message ?? job.safety?.reason ?? job.state.toLowerCase(),
      reason_code: job.error?.code ?? defaultReasonCode(job.state),
      last_state: job.state,
      attempts: job.attempts,
      created_at: new Date(job.finishedAt ?? now()).toISOString(),
    };
    const created = await redis.set(jobKeys.dlqEntry(job.id), JSON.stringify(entry), 'PX', DLQ_TTL_MS, 'NX');
    await redis.zadd(jobKeys.dlqIndex(), 'NX', job.finishedAt ?? now(), job.id);
    const tenantIndex = jobKeys.dlqIndexTenant(job.tenant);
    await Promise.all([redis.zadd(tenantIndex, 'NX', job.finishedAt ?? now(), job.id), redis.pexpire(tenantIndex, DLQ_TTL_MS)]);
    return created === 'OK';
  }

  return {
    ...createJobScans(redis),
    async createJob(j) {
      const createdAt = now();
      const ctx = { prompt: j.prompt, context: j.context ?? null, topic: j.topic, tenant_id: j.tenant, priority: j.priority, created_at: new Date(createdAt).toISOString() };
      // ctx first, NX: a record never points at a missing ctx, and a retried create never rewrites the input.
      await redis.set(jobKeys.ctx(j.id), JSON.stringify(ctx), 'PX', ttl, 'NX');
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
        deadlineAt: j.deadlineMs !== undefined ? createdAt + j.deadlineMs : undefined,
        safety: j.safety,
        error: j.initialState === 'DENIED' ? { code: 'policy_denied', message: j.safety?.reason || 'denied by policy' } : undefined,
        scheduleTries: 0,
        createdAt,
        updatedAt: createdAt,
        finishedAt: terminal ? createdAt : undefined,
      };
      if (j.initialState === 'APPROVAL_REQUIRED') rec.holdHash = jobRequestHash(rec, { prompt: j.prompt, context: j.context ?? null });
      const reply = await scripts.run<Reply>('create', [jobKeys.meta(j.id), jobKeys.fence(j.id)], [ttl, JSON.stringify(encodeFields(rec))]);
      const job = decodeFlat(reply[1]);
      if (!job) throw new JobStoreError('unexpected_reply', `create returned no record for ${j.id}`);
      // Side effects are idempotent, so a retried create repairs a half-done earlier one.
      await moveIndex(job, null);
      if (DLQ_STATES.has(job.state)) await writeDlq(job);
      if (reply[0] === 1) {
        await recordDecision(job);
        notify(job, null);
      }
      return job;
    },

    async getJob(id) {
      const h = await redis.hgetall(jobKeys.meta(id));
      const flat = Object.entries(h).flat();
      return decodeFlat(flat);
    },

    async readResult(job) {
      return readJson(redis, pointerKey(job.resultPtr));
    },

    async readContext(id) {
      return readJson(redis, jobKeys.ctx(id));
    },

    async requestHash(job) {
      const input = (await readJson(redis, jobKeys.ctx(job.id))) as StoredInput | null;
      return jobRequestHash(job, input);
    },

    async refreshContext(id) {
      await redis.pexpire(jobKeys.ctx(id), ttl);
    },

    async transition(id, to, o) {
      const t = now();
      const patch: JobPatch = { ...(o.patch ?? {}) };
      if (TERMINAL_STATES.has(to) && patch.finishedAt === undefined) patch.finishedAt = t;
      const reply = await scripts.run<Reply>(
        'transition',
        [jobKeys.meta(id), jobKeys.lock(id)],
        [o.token, (o.from ?? []).join(','), to, encodePatch(patch), t, allowedSources(to).join(',')],
      );
      const code = Number(reply[0]);
      if (code !== 1) {
        const current = decodeFlat(reply[2]) ?? undefined;
        return { ok: false, reason: failureFromCode(code), current };
      }
      const from = String(reply[1]) as JobState;
      const job = decodeFlat(reply[2]);
      if (!job) throw new JobStoreError('unexpected_reply', `transition returned no record for ${id}`);
      await moveIndex(job, from);
      if (o.patch?.safety) await recordDecision(job);
      if (DLQ_STATES.has(job.state)) await writeDlq(job, o.dlqReason);
      notify(job, from);
      return { ok: true, job, from };
    },

    async markPublished(id, dispatchId, token) {
      const reply = await scripts.run<Reply>('mark-published', [jobKeys.meta(id), jobKeys.lock(id)], [token, dispatchId, now()]);
      const code = Number(reply[0]);
      const job = decodeFlat(reply[1]) ?? undefined;
      if (code === 1 && job) return { ok: true, job };
      const reason = failureFromCode(code);
      if (reason === 'illegal_transition') throw new JobStoreError('unexpected_reply', 'mark-published cannot be illegal');
      return { ok: false, reason, current: job };
    },

    writeDlq,

    async getDlq(id) {
      return (await readJson(redis, jobKeys.dlqEntry(id))) as DlqEntry | null;
    },

    async expireResult(job) {
      const key = pointerKey(job.resultPtr) ?? jobKeys.res(job.id);
      await redis.pexpire(key, ttl);
    },

    async scheduleRetry(id, dueAtMs) {
      await redis.zadd(jobKeys.retry(), dueAtMs, id);
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
      const [deleted] = await Promise.all([
        redis.del(jobKeys.dlqEntry(entry.job_id)),
        redis.zrem(jobKeys.dlqIndex(), entry.job_id),
        redis.zrem(jobKeys.dlqIndexTenant(entry.tenant), entry.job_id),
      ]);
      return deleted === 1;
    },

    async patchJob(id, state, o) {
      const reply = await scripts.run<Reply>('transition', [jobKeys.meta(id), jobKeys.lock(id)], [o.token, state, state, encodePatch(o.patch), now(), state]);
      const code = Number(reply[0]);
      if (code !== 1) return { ok: false, reason: failureFromCode(code), current: decodeFlat(reply[2]) ?? undefined };
      const job = decodeFlat(reply[2]);
      if (!job) throw new JobStoreError('unexpected_reply', `patch returned no record for ${id}`);
      return { ok: true, job, from: state };
    },

    async reattempt(id, replaces, o) {
      const t = now();
      const reply = await scripts.run<Reply>('reattempt', [jobKeys.meta(id), jobKeys.lock(id), jobKeys.workerClaim(id)], [o.token, replaces, encodePatch(o.patch), t]);
      const code = Number(reply[0]);
      const job = decodeFlat(reply[1]) ?? undefined;
      if (code === 1 && job) {
        await moveIndex(job, 'DISPATCHED');
        notify(job, 'DISPATCHED');
        return { ok: true, job };
      }
      if (code === -5) return { ok: false, reason: 'claimed', current: job };
      const reason = failureFromCode(code);
      if (reason === 'illegal_transition') throw new JobStoreError('unexpected_reply', 'reattempt cannot be illegal');
      return { ok: false, reason, current: job };
    },
  };
}

function defaultReasonCode(state: JobState): string {
  if (state === 'DENIED') return 'policy_denied';
  if (state === 'TIMEOUT') return 'timeout';
  return 'failed';
}

/** JSON at `key`; null when absent or unparseable (fails open: a missing result is not an error). */
async function readJson(redis: RedisClient, key: string | null): Promise<unknown> {
  if (!key) return null;
  const raw = await redis.get(key);
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return null;
  }
}
