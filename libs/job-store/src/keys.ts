// Every job-store key name comes from here (CONTRACT §5, D4, D16).
// Per-job meta, fence and lock share the `{<id>}` hash tag so fenced Lua
// writes touch one Redis Cluster slot; ctx:/res: stay untagged because CAP
// workers read and write them by these exact names.
import type { JobState } from './states';

export const jobKeys = {
  meta: (id: string): string => `job:meta:{${id}}`,
  fence: (id: string): string => `job:fence:{${id}}`,
  lock: (id: string): string => `cordum:scheduler:job:{${id}}`,
  ctx: (id: string): string => `ctx:${id}`,
  res: (id: string): string => `res:${id}`,
  ctxPtr: (id: string): string => `redis://ctx:${id}`,
  resPtr: (id: string): string => `redis://res:${id}`,
  indexState: (tenant: string, state: JobState): string => `job:index:{${tenant}}:${state}`,
  indexAll: (tenant: string): string => `job:index:{${tenant}}:all`,
  idempotency: (tenant: string, key: string): string => `job:idempotency:${tenant}:${key}`,
  dlqEntry: (id: string): string => `dlq:entry:${id}`,
  dlqIndex: (): string => 'dlq:index',
  /**
   * ZSET of every per-tenant index key (`job:index:{<t>}:<state|all>`, `dlq:index:{<t>}`), scored by
   * when a writer last refreshed its TTL: the retention leader reads it instead of scanning the
   * keyspace (which holds millions of keys for a few hundred index keys).
   */
  indexRegistry: (): string => 'job:index:keys',
  /** Set once a retention pass has scanned for index keys written before the registry existed. */
  indexRegistryScanned: (): string => 'job:index:keys:scanned',
  /** Per-tenant DLQ index (additive to the global `dlq:index`) so a tenant's list never pages through others' entries. */
  dlqIndexTenant: (tenant: string): string => `dlq:index:{${tenant}}`,
  /**
   * Tombstone of a DLQ entry an operator deleted (DLQ TTL): a re-run of its write must not bring it
   * back (P22). Hash-tagged with the entry's key name, so dlq-set-2.lua reads both in one slot.
   */
  dlqDeleted: (id: string): string => `{dlq:entry:${id}}:deleted`,
  /** Retry claim of a DLQ entry (D14): SET NX holding the one new job id. */
  dlqRetry: (id: string): string => `dlq:retry:${id}`,
  /** Safety decision history of a job (same tag as meta): JSON entries, oldest first. */
  decisions: (id: string): string => `job:decisions:{${id}}`,
  retry: (): string => 'job:retry',
  /**
   * P134: JobCancels still owed to workers (ZSET, job id → when the schedulers send it): filed
   * before a cancel or TIMEOUT is written; after each send due again until the attempt answers
   * or the resend window ends (P135).
   */
  cancelOutbox: (): string => 'job:cancel:outbox',
  /** Jobs parked until a worker for `topic` appears (no-worker waits, docs/decisions.md P15), scored by expiry. */
  parked: (topic: string): string => `job:parked:${topic}`,
  /** Topics with parked jobs (SET), read by the replayer leader each turn. */
  parkedTopics: (): string => 'job:parked:topics',
  deadline: (): string => 'job:deadline',
  /**
   * P70 max_concurrent_jobs: the jobs holding one of a concurrency group's slots (ZSET, id → when
   * taken) and the jobs waiting for one (ZSET, id → when they first waited), in one slot (same tag)
   * so slot-acquire-2.lua reads both. A group is `<tenant>/<rule id>` (slotGroup).
   */
  slots: (group: string): string => `job:slots:{${group}}`,
  slotWaiters: (group: string): string => `job:slotwait:{${group}}`,
  /** Groups with waiters (SET), read by the replayer leader each turn; and each group's latest limit (HASH). */
  slotGroups: (): string => 'job:slotwait:groups',
  slotLimits: (): string => 'job:slotwait:limits',
  /** Global per-state index of in-flight jobs scored by when they entered the state (reconciler/replayer scans). */
  active: (state: JobState): string => `job:active:${state}`,
  /** worker-sdk's claim of a dispatch (its README): same {<id>} tag, read by reattempt-3.lua. */
  workerClaim: (id: string): string => `worker:claim:{${id}}`,
  /** BEHAVIOURS §4 worker registry snapshot (single writer). */
  workerSnapshot: (): string => 'sys:workers:snapshot',
} as const;

/** P70: the concurrency group of a job allowed by `ruleId` with max_concurrent_jobs: per tenant and rule. */
export function slotGroup(tenant: string, ruleId: string): string {
  return `${tenant}/${ruleId}`;
}

/**
 * The key behind a job's result pointer that the store may read or expire (P72): the job's own
 * `res:<id>` or `res:<id>:<name>` (CONTRACT §5 puts results at `res:<job_id>`), never anything
 * else a worker names, such as a record, a lock, an index, another job's input or another job's
 * result. null otherwise.
 */
export function resultKey(jobId: string, ptr: string | undefined): string | null {
  const k = pointerKey(ptr);
  const own = jobKeys.res(jobId);
  return k !== null && (k === own || k.startsWith(`${own}:`)) ? k : null;
}

/**
 * P71: the Redis keys behind a job's own output pointers: `res:<id>` and `res:<id>:<anything>`
 * (artifacts). Any other pointer a worker names is not the job's to measure or delete: it may be
 * another job's, or one of ours (a record, a lock). Each key once.
 */
export function ownOutputKeys(jobId: string, ptrs: readonly string[]): { keys: string[]; foreign: string[] } {
  const keys = new Set<string>();
  const foreign: string[] = [];
  for (const p of ptrs) {
    const k = resultKey(jobId, p);
    if (k !== null) keys.add(k);
    else foreign.push(p);
  }
  return { keys: [...keys], foreign };
}

/** `redis://ctx:<id>` → `ctx:<id>`; null for anything that is not a redis pointer. */
export function pointerKey(ptr: string | undefined): string | null {
  if (!ptr || !ptr.startsWith('redis://')) return null;
  const key = ptr.slice('redis://'.length);
  return key.length > 0 ? key : null;
}
