// P70 max_concurrent_jobs: per concurrency group (a tenant and the policy rule that set the
// limit, slotGroup), the jobs holding a slot and the jobs waiting for one. A job takes its slot
// right before its first dispatch and gives it back with its terminal write (the store's index
// move); a job that finds no free slot waits in the group's queue, and the scheduler's replayer
// leader wakes the longest waiters when slots free up. A crash between a write and its slot
// update leaves a stale member, which the leader drops once it reads the job's state.
import { defineScripts, execReplies, scriptSpec, type RedisClient } from '@cordum/redis';
import slotAcquireLua from './lua/slot-acquire-2.lua';
import slotDropIdleLua from './lua/slot-drop-idle-1.lua';
import { jobKeys } from './keys';
import { scored, type ScoredId } from './scans';
import { isJobState, type JobState } from './states';

export interface JobSlots {
  /**
   * Takes a slot of `group` (at most `limit` holders) for the job, or files the job as a waiter
   * (keeping the place it first queued at; the group is then listed for the leader). `limit` is
   * kept as the group's latest while the group has a queue (the leader reads it only for groups
   * with waiters): a job that waits writes it, and so does one that takes a slot while others
   * wait (a raised limit). true when the job holds a slot, taken now or before.
   */
  acquireSlot(group: string, id: string, limit: number): Promise<boolean>;
  /** Groups with waiters. */
  listSlotGroups(): Promise<string[]>;
  /** The limit the group's latest look was made with, or null. */
  slotLimit(group: string): Promise<number | null>;
  /** Up to `max` holders of the group's slots, each with when it last took or kept its slot (ms). */
  slotHolders(group: string, max: number): Promise<ScoredId[]>;
  /** Whether the job is in the group's queue. */
  isSlotWaiter(group: string, id: string): Promise<boolean>;
  /**
   * Files woken waiters in `job:retry` due at `atMs`, except those that already have an entry (a
   * throttle's or an unavailable kernel's later retry is kept). Answers how many were filed.
   */
  wakeWaiters(ids: string[], atMs: number): Promise<number>;
  /** The group's first `n` waiters, longest-waiting first. */
  slotWaiters(group: string, n: number): Promise<string[]>;
  /** The group's longest waiter while fewer than `limit` jobs hold its slots, else undefined (one round trip). */
  nextSlotWaiter(group: string, limit: number): Promise<string | undefined>;
  /**
   * Drops holders and waiters, whatever their scores: for a caller that holds each job's lock
   * (a job that leaves its group, a waiter the leader re-read under its lock) or knows the job
   * ended, since a live job may take or keep its place again at any time otherwise.
   */
  dropSlotMembers(group: string, holders: string[], waiters: string[]): Promise<void>;
  /**
   * Drops the holders the caller judged idle from what it read (`slotHolders`), each only while
   * its score is still the one read: a holder whose job took or kept its slot since (a look
   * refreshes its score) keeps it. In one script, atomic per group. Answers how many were dropped.
   */
  dropIdleSlotHolders(group: string, holders: readonly ScoredId[]): Promise<number>;
  /**
   * Unlists a group with no waiters and forgets its limit (re-lists it, and puts its limit back,
   * if a wait raced the removal).
   */
  dropSlotGroupIfIdle(group: string): Promise<void>;
  /** Each job's state, null for a job with no record (expired, deleted), in the order given. */
  jobStates(ids: string[]): Promise<(JobState | null)[]>;
}

export function createJobSlots(redis: RedisClient, ttlMs: number, now: () => number): JobSlots {
  const scripts = defineScripts(redis, [scriptSpec('slot-acquire-2.lua', slotAcquireLua), scriptSpec('slot-drop-idle-1.lua', slotDropIdleLua)]);
  /** Deletes the group's limit and answers what it was (null: none), in one transaction. */
  const takeLimit = async (group: string): Promise<string | null> => {
    const [limit] = await execReplies(redis.multi().hget(jobKeys.slotLimits(), group).hdel(jobKeys.slotLimits(), group).exec());
    return typeof limit === 'string' ? limit : null;
  };
  return {
    async acquireSlot(group, id, limit) {
      // The limit is written only while the group has a queue, so a group that never queues
      // leaves no field in `job:slotwait:limits` (one per tenant and rule otherwise, forever) and
      // the leader forgets it with the group's listing (dropSlotGroupIfIdle). It is written after
      // the script's reply: a waiter is then in the queue before its limit is written, so a
      // cleanup that deletes the limit after it was written finds the waiter in its re-check.
      // A job that takes a slot while others wait (the queue counted before its own look, so a
      // woken waiter counts itself) writes it too: the leader frees slots by a raised limit.
      const [queued, reply] = await Promise.all([
        redis.zcard(jobKeys.slotWaiters(group)),
        scripts.run<number>('slot-acquire', [jobKeys.slots(group), jobKeys.slotWaiters(group)], [id, limit, now(), ttlMs]),
      ]);
      const held = Number(reply) === 1;
      const keepLimit = () => redis.hset(jobKeys.slotLimits(), group, String(limit));
      if (!held) await Promise.all([redis.sadd(jobKeys.slotGroups(), group), keepLimit()]);
      else if (queued > 0) await keepLimit();
      return held;
    },
    listSlotGroups: () => redis.smembers(jobKeys.slotGroups()),
    async slotLimit(group) {
      const v = Number(await redis.hget(jobKeys.slotLimits(), group));
      return Number.isInteger(v) && v > 0 ? v : null;
    },
    slotHolders: async (group, max) => scored(await redis.zrange(jobKeys.slots(group), '0', String(max - 1), 'WITHSCORES')),
    async isSlotWaiter(group, id) {
      return (await redis.zscore(jobKeys.slotWaiters(group), id)) !== null;
    },
    async wakeWaiters(ids, atMs) {
      return ids.length === 0 ? 0 : Number(await redis.zadd(jobKeys.retry(), 'NX', ...ids.flatMap((id) => [atMs, id])));
    },
    slotWaiters: (group, n) => (n > 0 ? redis.zrange(jobKeys.slotWaiters(group), '0', String(n - 1)) : Promise.resolve([])),
    async nextSlotWaiter(group, limit) {
      const [held, [first]] = await Promise.all([redis.zcard(jobKeys.slots(group)), redis.zrange(jobKeys.slotWaiters(group), '0', '0')]);
      return held < limit ? first : undefined;
    },
    async dropSlotMembers(group, holders, waiters) {
      await Promise.all([
        holders.length > 0 ? redis.zrem(jobKeys.slots(group), ...holders) : null,
        waiters.length > 0 ? redis.zrem(jobKeys.slotWaiters(group), ...waiters) : null,
      ]);
    },
    async dropIdleSlotHolders(group, holders) {
      if (holders.length === 0) return 0;
      return Number(await scripts.run<number>('slot-drop-idle', [jobKeys.slots(group)], holders.flatMap((h) => [h.id, h.score])));
    },
    async dropSlotGroupIfIdle(group) {
      const waiting = async () => (await redis.zcard(jobKeys.slotWaiters(group))) > 0;
      if (await waiting()) return;
      // Holders need no limit (only the leader reads it, for groups with waiters), so it goes
      // with the listing. Read and deleted at once (one key, MULTI): a wait racing the removal
      // wrote its limit after it joined the queue, so either that write comes after the delete,
      // or the waiter is in the queue by the re-check below and the limit deleted (the latest
      // written, the waiter's or a newer one) goes back, unless a look wrote its own since (NX).
      await redis.srem(jobKeys.slotGroups(), group);
      const limit = await takeLimit(group);
      if (!(await waiting())) return;
      await Promise.all([redis.sadd(jobKeys.slotGroups(), group), limit === null ? null : redis.hsetnx(jobKeys.slotLimits(), group, limit)]);
    },
    async jobStates(ids) {
      const states = await Promise.all(ids.map((id) => redis.hget(jobKeys.meta(id), 'state')));
      return states.map((s) => (s !== null && isJobState(s) ? s : null));
    },
  };
}
