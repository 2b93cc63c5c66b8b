// Cursor pagination over a ZSET index, newest first (D16): never a capped
// list. Filters (tenant, state, topic, expired records) are applied while
// paging, with a bounded number of index entries scanned per request, so a
// page can hold fewer than `limit` items while `next_cursor` is still set.
import type { RedisClient } from '@cordum/redis';
import { encodeCursor, type Position } from './cursor';

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

export async function pageIndex<T>(redis: RedisClient, req: PageRequest<T>): Promise<Page<T>> {
  const items: T[] = [];
  let scanned = 0;
  let last: Position | null = req.after;
  let exhausted = false;
  // Each batch starts where the previous one ended (its last score, skipping the entries of that
  // score already read), not at a position in the whole index: entries added or removed above
  // meanwhile (a job finishing, an expired DLQ entry dropped) used to shift every later batch, so
  // a page skipped or repeated that many entries.
  let bound: number | null = req.after ? req.after.score : null;
  let seenAtBound = 0;
  while (items.length < req.limit && scanned < req.scanBudget) {
    const count = Math.min(BATCH, req.scanBudget - scanned);
    const raw = await redis.zrevrangebyscore(req.key, bound === null ? '+inf' : String(bound), '-inf', 'WITHSCORES', 'LIMIT', seenAtBound, count);
    const pairs: Position[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) pairs.push({ id: raw[i] as string, score: Number(raw[i + 1]) });
    const tail = pairs[pairs.length - 1];
    if (tail) {
      const atTail = pairs.filter((p) => p.score === tail.score).length;
      seenAtBound = tail.score === bound ? seenAtBound + atTail : atTail;
      bound = tail.score;
    }
    // Entries with the cursor's score sort by member descending; those >= the cursor's id were on earlier pages.
    const after = req.after;
    const fresh = after ? pairs.filter((p) => !(p.score === after.score && p.id >= after.id)) : pairs;
    const loaded = fresh.length > 0 ? await req.load(fresh.map((p) => p.id)) : [];
    let consumedAll = true;
    for (let i = 0; i < fresh.length; i++) {
      scanned += 1;
      last = fresh[i] ?? last;
      const item = loaded[i];
      if (item !== null && item !== undefined) items.push(item);
      if (items.length >= req.limit || scanned >= req.scanBudget) {
        consumedAll = i === fresh.length - 1;
        break;
      }
    }
    if (pairs.length < count && consumedAll) {
      exhausted = true;
      break;
    }
    if (!consumedAll) break;
  }
  return { items, next_cursor: exhausted || last === null || last === req.after ? null : encodeCursor(last) };
}
