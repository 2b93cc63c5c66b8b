// Batched index updates (D16 tenant indexes, job:active, job:deadline, job:retry).
// The indexes live in other slots than the record (tenant tag or global keys),
// so they cannot join the record's atomic script; they are idempotent commands
// issued after it. Under load many transitions finish in the same event-loop
// turn: their updates are merged into one variadic ZADD / ZREM per key, sent
// together (one socket write per node, libs/redis) at the end of
// the turn, so a job costs a fraction of a command per index instead of one
// ZADD, one ZREM and one PEXPIRE per key per transition (issue 7). A lone
// transition is flushed in the same turn, so nothing waits for a batch to fill.
//
// Order inside a flush: every ZADD before any ZREM, so a crash in between
// leaves a job in two indexes (a scan repairs it), never in none (D16); and
// before the PEXPIRE of its key, which would be a no-op on a missing key.
//
// On a cluster the two phases are not atomic, and another writer's whole batch can land between
// them (this process stalled after its adds): its removal of a job's old in-flight entry could then
// take the entry the other writer has just added for the job's new move back into that state (a
// retry sent meanwhile), leaving the job in no in-flight index (P274). A removal given the job's
// record and the state it leaves (`rem(key, member, restore)`) reads the record once the removal
// is done: a job that is in that state again gets its entry back, scored by the record's
// updatedAt, the time of the move that brought it back (P292). P274 first bounded the removal by
// the entry's score instead; that compared two replicas' clocks, and a writer whose clock ran
// ahead (by more than a few milliseconds, under the 250 ms P241 leaves alone) left stale entries
// behind routinely.
//
// On standalone Redis a flush is one script call (index-batch-n.lua), atomic,
// so the order holds trivially and a lone transition costs one command sent
// instead of two ZADDs and two ZREMs: at moderate load, where batches hold one
// job, that is most of the commands a job sends (issue 7). On a cluster the keys
// live on different nodes, so the flush is one command per untagged key, and one
// index-batch-n.lua call per hash tag: a tenant's listings (`job:index:{<t>}:*`,
// `dlq:index:{<t>}`) share a slot, so their adds and removals stay atomic as on
// standalone. Split, a stalled writer's late ZREM took the entry a later move back
// into that state had added, and the job left every state listing of its tenant
// (its creation-time score cannot bound the removal as P274 does; P279).
import { clusterNow, defineScripts, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import indexBatchLua from './lua/index-batch-n.lua';
import { jobKeys } from './keys';
import { indexRetention } from './retention';

/**
 * A key's TTL is pushed forward at most this often per process, and by this much more than the
 * TTL asked for: a job added to the key inside the window gets no refresh of its own, and its record
 * (given the TTL when written) must not outlive the listing it is found through (P303).
 */
export const INDEX_EXPIRE_EVERY_MS = 60_000;
const MAX_EXPIRE_MEMO = 10_000;

export interface IndexOps {
  /** ZADD key score member; `expire` also keeps the key's TTL (ms) fresh. */
  add(key: string, score: number, member: string, expireMs?: number): void;
  /**
   * ZREM key member; with `restore` (cluster), the job's record is read once the removal is done,
   * and a job that is in `restore.state` again (another writer moved it back meanwhile, and this late
   * removal took that move's entry) gets its entry back (P292). Standalone batches are atomic and
   * ignore it.
   */
  rem(key: string, member: string, restore?: RestoreIf): void;
  /** Keeps the key's TTL (ms) fresh without adding to it (a key written by a script, store.ts createJob). */
  expire(key: string, expireMs: number): void;
}

export interface IndexWriter {
  /** Queues the ops `fill` adds; resolves once they are written (rejects if a command failed). */
  write(fill: (ops: IndexOps) => void): Promise<void>;
}

/** The record whose state decides whether a removed entry comes back (cluster, P292). */
export interface RestoreIf {
  /** The job's record key (a hash with `state` and `updatedAt`). */
  meta: string;
  /** The state the removal is for: the job is back in it, so its entry must be too. */
  state: string;
}

/** ZADD pairs and ZREM members per key. */
interface KeyOps {
  adds: Map<string, (string | number)[]>;
  rems: Map<string, string[]>;
}

interface Batch extends KeyOps {
  /** Cluster only: removals whose record is read afterwards (P292). */
  restores: { key: string; member: string; restore: RestoreIf }[];
  expires: Map<string, number>;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A key's Redis Cluster hash tag: what the first `{` and the next `}` enclose, when not empty; null otherwise. */
export function hashTag(key: string): string | null {
  const open = key.indexOf('{');
  if (open < 0) return null;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : null;
}

export function createIndexWriter(redis: RedisClient, now: () => number = clusterNow): IndexWriter {
  let batch: Batch | null = null;
  const clustered = redis.isCluster;
  // Last PEXPIRE per key: a key written thousands of times a second needs its TTL refreshed once a minute.
  const expiredAt = new Map<string, number>();
  const batchScript = defineScripts(redis, [scriptSpec('index-batch-n.lua', indexBatchLua)]);

  /** P292: after the removals, a job back in the state it left gets its entry again. */
  const restoreBack = async (restores: Batch['restores']): Promise<unknown> => {
    if (restores.length === 0) return;
    const states = await Promise.all(restores.map((r) => redis.hmget(r.restore.meta, 'state', 'updatedAt')));
    const back: Promise<unknown>[] = [];
    for (const [i, r] of restores.entries()) {
      const [state, updatedAt] = states[i] ?? [];
      const at = Number(updatedAt);
      if (state === r.restore.state && Number.isFinite(at)) back.push(redis.zadd(r.key, at, r.member));
    }
    return Promise.all(back);
  };

  /** One script call with every ZADD, the due PEXPIREs, then every ZREM (standalone; on a cluster, one hash tag's keys). */
  const writeOnce = (run: ScriptRunner, b: KeyOps, expires: [string, number][]): Promise<unknown> => {
    const keys: string[] = [];
    const args: (string | number)[] = [b.adds.size, expires.length, b.rems.size];
    const append = (list: (string | number)[]): void => {
      for (const v of list) args.push(v);
    };
    for (const [key, pairs] of b.adds) {
      keys.push(key);
      args.push(pairs.length / 2);
      append(pairs);
    }
    for (const [key, ttl] of expires) {
      keys.push(key);
      args.push(ttl);
    }
    for (const [key, members] of b.rems) {
      keys.push(key);
      args.push(members.length);
      append(members);
    }
    return run.run('index-batch', keys, args);
  };

  /**
   * Cluster: one index-batch-n.lua call per hash tag (its keys share a slot), one command per
   * untagged key. An untagged key's PEXPIRE and removals wait for the adds: the keys live on other
   * nodes, and even one key's ZADD and PEXPIRE sent together are not ordered, because ioredis
   * sends a command whose slot it has no owner for yet to a random master, which answers MOVED; a
   * PEXPIRE that ran first, on a key not yet created, would be a no-op.
   */
  const writePerKey = (b: Batch, expires: [string, number][]): Promise<unknown> => {
    const tagged = new Map<string, KeyOps & { expires: [string, number][] }>();
    const groupOf = (key: string): (KeyOps & { expires: [string, number][] }) | undefined => {
      const tag = hashTag(key);
      if (tag === null) return undefined;
      let g = tagged.get(tag);
      if (!g) tagged.set(tag, (g = { adds: new Map(), rems: new Map(), expires: [] }));
      return g;
    };
    const adds: Promise<unknown>[] = [];
    const untaggedExpires: [string, number][] = [];
    const untaggedRems: [string, string[]][] = [];
    for (const [key, args] of b.adds) {
      const g = groupOf(key);
      if (g) g.adds.set(key, args);
      else adds.push(redis.zadd(key, ...args));
    }
    for (const e of expires) {
      const g = groupOf(e[0]);
      if (g) g.expires.push(e);
      else untaggedExpires.push(e);
    }
    for (const [key, members] of b.rems) {
      const g = groupOf(key);
      if (g) g.rems.set(key, members);
      else untaggedRems.push([key, members]);
    }
    const sent: Promise<unknown>[] = [...tagged.values()].map((g) => writeOnce(batchScript, g, g.expires));
    sent.push(
      Promise.all(adds)
        .then(() => {
          const rest: Promise<unknown>[] = [];
          for (const [key, ttl] of untaggedExpires) rest.push(redis.pexpire(key, ttl));
          for (const [key, members] of untaggedRems) rest.push(redis.zrem(key, ...members));
          return Promise.all(rest);
        })
        .then(() => restoreBack(b.restores)),
    );
    return Promise.all(sent);
  };

  const flush = (b: Batch): void => {
    batch = null;
    const t = now();
    const expires: [string, number][] = [];
    for (const [key, ttl] of b.expires) {
      const last = expiredAt.get(key);
      if (last !== undefined && t - last < INDEX_EXPIRE_EVERY_MS) continue;
      if (expiredAt.size >= MAX_EXPIRE_MEMO) expiredAt.clear();
      expiredAt.set(key, t);
      expires.push([key, ttl + INDEX_EXPIRE_EVERY_MS]);
    }
    if (b.adds.size === 0 && b.rems.size === 0 && expires.length === 0) {
      b.resolve(); // only TTLs that were pushed forward less than a minute ago: nothing to send
      return;
    }
    const written = clustered ? writePerKey(b, expires) : writeOnce(batchScript, b, expires);
    // The per-tenant index keys whose TTL is refreshed now are (re)registered for the retention
    // leader (retention.ts, P89), after their ZADDs. Best effort, off the commit path: the batch
    // resolves with its index writes, and a failed registration is retried with the key's next
    // TTL refresh (its memo entry is cleared). On standalone Redis the ZADD follows the script on
    // the same connection, so it is sent at once; on a cluster it waits for the adds' replies.
    const registered: (string | number)[] = [];
    for (const [key] of expires) if (indexRetention(key) !== null) registered.push(t, key);
    if (registered.length > 0) {
      const register = (): Promise<unknown> => redis.zadd(jobKeys.indexRegistry(), ...registered);
      (clustered ? written.then(register) : register()).catch(() => {
        for (let i = 1; i < registered.length; i += 2) if (expiredAt.get(registered[i] as string) === t) expiredAt.delete(registered[i] as string);
      });
    }
    written.then(() => b.resolve(), (err: unknown) => {
        // A failed PEXPIRE must be retried by the next write to that key.
        for (const key of b.expires.keys()) if (expiredAt.get(key) === t) expiredAt.delete(key);
        b.reject(err);
      });
  };

  const open = (): Batch => {
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const b: Batch = { adds: new Map(), rems: new Map(), restores: [], expires: new Map(), done, resolve, reject };
    setImmediate(() => flush(b));
    return b;
  };

  return {
    write(fill) {
      const b = (batch ??= open());
      fill({
        add(key, score, member, expireMs) {
          let a = b.adds.get(key);
          if (!a) b.adds.set(key, (a = []));
          a.push(score, member);
          if (expireMs !== undefined) b.expires.set(key, expireMs);
        },
        rem(key, member, restore) {
          if (clustered && restore !== undefined) b.restores.push({ key, member, restore });
          let r = b.rems.get(key);
          if (!r) b.rems.set(key, (r = []));
          r.push(member);
        },
        expire(key, expireMs) {
          b.expires.set(key, expireMs);
        },
      });
      return b.done;
    },
  };
}
