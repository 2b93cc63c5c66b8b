// Cursor pagination over a ZSET index, newest first (D16): never a capped
// list. Filters (tenant, state, topic, expired records) are applied while
// paging, with a bounded number of index entries scanned per request, so a
// page can hold fewer than `limit` items while `next_cursor` is still set.
import { defineScripts, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import { encodeCursor, type Position } from './cursor';
import pageAfterLua from './lua/page-after-1.lua';

export interface PageRequest<T> {
  key: string;
  after: Position | null;
  limit: number;
  /** Upper bound of index entries examined by one request (keeps each request O(budget)). */
  scanBudget: number;
  /** Loads the entries for ids (same order); null drops an id from the page. */
  load(ids: string[]): Promise<(T | null)[]>;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

const BATCH = 100;

const runners = new WeakMap<RedisClient, ScriptRunner>();
function scriptsOf(redis: RedisClient): ScriptRunner {
  let r = runners.get(redis);
  if (!r) runners.set(redis, (r = defineScripts(redis, [scriptSpec('page-after-1.lua', pageAfterLua)])));
  return r;
}

/** `count` entries after `bound` by rank while it is still there (page-after-1.lua), else null. */
async function readAfter(redis: RedisClient, key: string, bound: Position, count: number): Promise<string[] | null> {
  const raw = await scriptsOf(redis).run<string[] | null>('page-after', [key], [String(bound.score), bound.id, count]);
  return Array.isArray(raw) ? raw.map(String) : null;
}

export async function pageIndex<T>(redis: RedisClient, req: PageRequest<T>): Promise<Page<T>> {
  const items: T[] = [];
  let scanned = 0;
  let last: Position | null = req.after;
  let exhausted = false;
  // Each batch starts where the previous one ended (the last entry read, or the cursor's), not at
  // a position in the whole index: entries added or removed above meanwhile (a job finishing, an
  // expired DLQ entry dropped) used to shift every later batch, so a page skipped or repeated that
  // many entries. While that entry is still in the index the batch is the entries after it by
  // rank, in one script; once it is gone (the DLQ list drops an expired entry's member while it
  // builds the page, a DELETE) the batch is read from the top of its score, and what sorts at or
  // above it there (ties sort by member, descending) is dropped as already read. An offset past
  // the entries read at that score skipped one live entry for each of those removed (P248).
  let bound: Position | null = req.after;
  /** Entries of the bound's score at or above it when last read: read again and dropped, so the batch still brings `count` new ones. */
  let atBound = 0;
  while (items.length < req.limit && scanned < req.scanBudget) {
    const count = Math.min(BATCH, req.scanBudget - scanned);
    const after = bound === null ? null : await readAfter(redis, req.key, bound, count);
    const want = after === null ? count + atBound : count;
    const raw = after ?? (await redis.zrevrangebyscore(req.key, bound === null ? '+inf' : String(bound.score), '-inf', 'WITHSCORES', 'LIMIT', 0, want));
    const pairs: Position[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) pairs.push({ id: raw[i] as string, score: Number(raw[i + 1]) });
    const ended = pairs.length < want;
    const b = bound;
    const fresh = b ? pairs.filter((p) => !(p.score === b.score && p.id >= b.id)) : pairs;
    if (fresh.length === 0) {
      if (ended) {
        exhausted = true;
        break;
      }
      // More entries share the bound's score above it than we knew (a cursor from an earlier page
      // whose entry is gone): read past them, twice as far each time, so a large group of one
      // score costs reads in proportion to its size, not its square.
      atBound = Math.max(pairs.length, 2 * atBound);
      continue;
    }
    const batch = fresh.slice(0, count);
    const loaded = await req.load(batch.map((p) => p.id));
    let consumed = 0;
    for (let i = 0; i < batch.length; i++) {
      scanned += 1;
      consumed = i + 1;
      const item = loaded[i];
      if (item !== null && item !== undefined) items.push(item);
      if (items.length >= req.limit || scanned >= req.scanBudget) break;
    }
    const read = batch[consumed - 1] as Position;
    last = read;
    bound = read;
    atBound = pairs.slice(0, pairs.indexOf(read) + 1).filter((p) => p.score === read.score).length;
    if (consumed === fresh.length && ended) {
      exhausted = true;
      break;
    }
    if (consumed < batch.length) break;
  }
  return { items, next_cursor: exhausted || last === null || last === req.after ? null : encodeCursor(last) };
}
