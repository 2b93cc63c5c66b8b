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
  const max = req.after ? String(req.after.score) : '+inf';
  const items: T[] = [];
  let offset = 0;
  let scanned = 0;
  let last: Position | null = req.after;
  let exhausted = false;
  while (items.length < req.limit && scanned < req.scanBudget) {
    const count = Math.min(BATCH, req.scanBudget - scanned);
    const raw = await redis.zrevrangebyscore(req.key, max, '-inf', 'WITHSCORES', 'LIMIT', offset, count);
    const pairs: Position[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) pairs.push({ id: raw[i] as string, score: Number(raw[i + 1]) });
    offset += pairs.length;
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
