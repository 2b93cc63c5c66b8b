// Cursor paging over a ZSET index (D16) while the index changes. Batches used to be read by
// position in the whole index: entries removed above a later batch (jobs finishing, expired DLQ
// entries dropped by the list itself) shifted it, so a page skipped that many entries, and
// entries added above repeated some. Each batch now starts where the previous one ended.
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedis, type TestServer } from '@cordum/testing';
import { decodeCursor } from '../src/lists/cursor';
import { pageIndex, type Page } from '../src/lists/pager';

let server: TestServer;
let redis: RedisClient;
beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});
afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

const id = (i: number) => `job-${String(i).padStart(4, '0')}`;

async function fill(key: string, n: number, scoreOf: (i: number) => number): Promise<void> {
  await redis.del(key);
  for (let i = 0; i < n; i++) await redis.zadd(key, scoreOf(i), id(i));
}

/** Every item of `key`, following next_cursor page by page (`limit` each, at most `maxPages`). */
async function followCursor(key: string, limit: number, maxPages: number): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < maxPages; pages++) {
    const page: Page<string> = await pageIndex(redis, { key, after: decodeCursor(cursor ?? undefined), limit, scanBudget: 2_000, load: async (ids) => ids });
    seen.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return seen;
}

it('a page whose loader removes entries it has read (as the DLQ list drops expired ones) skips no later entry', async () => {
  const key = 'idx:shrinking';
  await fill(key, 300, (i) => 1_000 + i);
  // the first 50 of every batch are "expired": dropped from the index while the page is built
  const page = await pageIndex(redis, {
    key, after: null, limit: 200, scanBudget: 2_000,
    load: async (ids) => {
      const gone = ids.slice(0, 50);
      if (gone.length) await redis.zrem(key, ...gone);
      return ids.map((x) => (gone.includes(x) ? null : x));
    },
  });
  // newest first: batches of 100 → 50 live each; every live entry in order, none skipped
  const expected = Array.from({ length: 300 }, (_, i) => id(299 - i)).filter((_, k) => k % 100 >= 50);
  expect(page.items).toEqual(expected.slice(0, 150));
  expect(page.items).toHaveLength(150);
});

it('a page whose loader removes the last entry of a batch skips no later entry (P248)', async () => {
  const key = 'idx:tail-gone';
  await fill(key, 150, (i) => 20_000 + i);
  // The 100th newest (the last of the first batch) has no entry any more: the loader drops it from the index, as the DLQ list does.
  const gone = id(50);
  const page = await pageIndex(redis, {
    key, after: null, limit: 500, scanBudget: 2_000,
    load: async (ids) => {
      if (ids.includes(gone)) await redis.zrem(key, gone);
      return ids.map((x) => (x === gone ? null : x));
    },
  });
  expect(page.items).toEqual(Array.from({ length: 150 }, (_, i) => id(149 - i)).filter((x) => x !== gone));
  expect(page.next_cursor).toBeNull();
});

it('entries of the last batch\'s score removed by someone else (a DELETE) before the next batch make it skip none (P248)', async () => {
  const key = 'idx:tail-deleted';
  // 20 entries share a score across the first batch's end (ties sort by member, descending).
  await fill(key, 150, (i) => (i < 90 ? 10_000 - i : i < 110 ? 5_000 : 1_000 - i));
  const page = await pageIndex(redis, {
    key, after: null, limit: 500, scanBudget: 2_000,
    load: async (ids) => {
      // While the first batch is loaded, five of its tied entries are deleted (already read).
      if (ids.includes(id(109))) for (let i = 105; i < 110; i++) await redis.zrem(key, id(i));
      return ids;
    },
  });
  const tied = Array.from({ length: 20 }, (_, k) => id(109 - k));
  const want = [...Array.from({ length: 90 }, (_, i) => id(i)), ...tied, ...Array.from({ length: 40 }, (_, k) => id(110 + k))];
  expect(page.items).toEqual(want);
});

it('entries added above the page while it is read are neither repeated nor make it skip', async () => {
  const key = 'idx:growing';
  await fill(key, 250, (i) => 10_000 + i);
  let added = 0;
  const page = await pageIndex(redis, {
    key, after: null, limit: 250, scanBudget: 2_000,
    load: async (ids) => {
      // 40 newer entries arrive during each batch (they belong to a later, newer listing)
      for (let k = 0; k < 40; k++) await redis.zadd(key, 50_000 + added++, `new-${added}`);
      return ids;
    },
  });
  expect(page.items).toEqual(Array.from({ length: 250 }, (_, i) => id(249 - i)));
});

it('pages through entries that share a score, in member order, each once', async () => {
  const key = 'idx:ties';
  await fill(key, 230, (i) => (i < 150 ? 7 : 3)); // 150 at score 7, 80 at score 3
  const seen = await followCursor(key, 60, 10);
  const want = [...Array.from({ length: 150 }, (_, i) => id(i)).sort().reverse(), ...Array.from({ length: 80 }, (_, i) => id(150 + i)).sort().reverse()];
  expect(seen).toEqual(want);
});

it('pages through a large group of entries sharing one score reading each entry about once, not once per batch (P248)', async () => {
  const key = 'idx:big-tie';
  await redis.del(key);
  const n = 3_000;
  for (let i = 0; i < n; i += 500) await redis.zadd(key, ...Array.from({ length: Math.min(500, n - i) }, (_, k) => [5, id(i + k)]).flat());
  const outBytes = async () => Number(/total_net_output_bytes:(\d+)/.exec(await redis.info('stats'))?.[1] ?? 0);
  const before = await outBytes();
  const seen = await followCursor(key, 100, 100);
  expect(seen).toEqual(Array.from({ length: n }, (_, i) => id(i)).reverse());
  // One pass over the group is ~3,000 × ~30 bytes; reading each batch from the top of the score was ~15× that.
  expect(await outBytes() - before).toBeLessThan(400_000);
});
