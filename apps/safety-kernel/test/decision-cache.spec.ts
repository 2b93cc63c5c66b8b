import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DecisionCache, decisionCacheKey } from '../src/cache/decision-cache';
import { LruTtlCache } from '../src/cache/lru-ttl';
import type { CheckInput, EvalResult } from '../src/policy/evaluator';

// Pure logic with an injected clock (no timers involved).

const input = (over: Partial<CheckInput> = {}): CheckInput => ({
  jobId: 'j1',
  tenant: 'acme',
  topic: 'job.echo',
  principalId: 'p',
  capability: '',
  riskTags: [],
  requires: [],
  labels: {},
  actorType: '',
  ...over,
});

const result = (snapshotId: string, over: Partial<EvalResult> = {}): EvalResult => ({
  verdict: 'allow',
  ruleId: 'r',
  reason: 'ok',
  snapshotId,
  trace: [{ ruleId: 'r', matched: true, why: 'x' }],
  velocityConsulted: false,
  ...over,
});

function counting() {
  const c = { hits: 0, misses: 0, size: 0 };
  return { c, observer: { hit: () => void c.hits++, miss: () => void c.misses++, size: (n: number) => void (c.size = n) } };
}

describe('LruTtlCache', () => {
  it('evicts the least recently used entry beyond maxSize', () => {
    const lru = new LruTtlCache<number>({ maxSize: 2, ttlMs: 1000, now: () => 0 });
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('a')).toBe(1); // a is now the most recently used
    lru.set('c', 3);
    expect(lru.size).toBe(2);
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBe(1);
    expect(lru.get('c')).toBe(3);
  });

  it('expires entries ttlMs after they were written, however often they are read', () => {
    let t = 0;
    const lru = new LruTtlCache<number>({ maxSize: 10, ttlMs: 100, now: () => t });
    lru.set('a', 1);
    t = 99;
    expect(lru.get('a')).toBe(1);
    t = 100;
    expect(lru.get('a')).toBeUndefined();
    expect(lru.size).toBe(0);
  });

  it('a write drops the expired entries at the LRU end, so an idle cache does not keep them up to maxSize (P173)', () => {
    let t = 0;
    const lru = new LruTtlCache<number>({ maxSize: 10, ttlMs: 100, now: () => t });
    for (const k of ['a', 'b', 'c']) lru.set(k, 1);
    t = 50;
    lru.set('d', 1);
    t = 120; // a, b, c expired; d has not
    lru.set('e', 1);
    expect(lru.size).toBe(2);
    expect([lru.get('d'), lru.get('e')]).toEqual([1, 1]);
  });
});

describe('decisionCacheKey', () => {
  it('ignores job id and the order/duplicates of set-matched fields and labels', () => {
    const a = decisionCacheKey('s', input({ jobId: 'x', riskTags: ['b', 'a'], requires: ['r2', 'r1', 'r1'], labels: { z: '1', a: '2' } }));
    const b = decisionCacheKey('s', input({ jobId: 'y', riskTags: ['a', 'b', 'a'], requires: ['r1', 'r2'], labels: { a: '2', z: '1' } }));
    expect(a).toBe(b);
  });

  it('differs for every field evaluation can look at, and for the snapshot', () => {
    const base = decisionCacheKey('s', input());
    const variants: Partial<CheckInput>[] = [
      { tenant: 'other' },
      { topic: 'job.other' },
      { principalId: 'q' },
      { capability: 'cap' },
      { riskTags: ['destructive'] },
      { requires: ['gpu'] },
      { labels: { env: 'prod' } },
      { actorType: 'human' },
    ];
    for (const v of variants) expect(decisionCacheKey('s', input(v))).not.toBe(base);
    expect(decisionCacheKey('s2', input())).not.toBe(base);
    // no ambiguity from separators inside values
    expect(decisionCacheKey('s', input({ tenant: 'a","b' }))).not.toBe(decisionCacheKey('s', input({ tenant: 'a', topic: 'b' })));
  });
});

describe('DecisionCache', () => {
  it('serves a stored result for the same snapshot and counts hits and misses', () => {
    const { c, observer } = counting();
    const cache = new DecisionCache({ ttlMs: 1000, maxSize: 10, now: () => 0 }, observer);
    expect(cache.get('s1', input())).toBeUndefined();
    expect(cache.put(input(), result('s1'))).toBe(true);
    const hit = cache.get('s1', input({ jobId: 'j2' }));
    expect(hit).toMatchObject({ verdict: 'allow', snapshotId: 's1', trace: [] });
    expect(c).toEqual({ hits: 1, misses: 1, size: 1 });
  });

  it('never stores a result that read a velocity window', () => {
    const { c, observer } = counting();
    const cache = new DecisionCache({ ttlMs: 1000, maxSize: 10, now: () => 0 }, observer);
    cache.get('s1', input());
    expect(cache.put(input(), result('s1', { velocityConsulted: true }))).toBe(false);
    expect(cache.get('s1', input())).toBeUndefined();
    expect(c.size).toBe(0);
  });

  it('flushes when the snapshot changes and drops late results of the old snapshot', () => {
    const { c, observer } = counting();
    const cache = new DecisionCache({ ttlMs: 1000, maxSize: 10, now: () => 0 }, observer);
    cache.get('s1', input());
    cache.put(input(), result('s1'));
    cache.reset('s2');
    expect(cache.size).toBe(0);
    expect(c.size).toBe(0);
    // an evaluation that started on s1 and finishes after the switch
    expect(cache.put(input(), result('s1'))).toBe(false);
    expect(cache.get('s2', input())).toBeUndefined();
    cache.reset('s2'); // same id: nothing flushed
    cache.put(input(), result('s2'));
    cache.reset('s2');
    expect(cache.get('s2', input())).toMatchObject({ snapshotId: 's2' });
  });
});

describe('DecisionCache memory (P173)', () => {
  it('stores a fixed-size key per entry, not the JSON of its inputs: 300 entries of 200 KB inputs hold a few MB', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const cache = new DecisionCache({ ttlMs: 60_000, maxSize: 10_000 }, counting().observer);
    cache.reset('s1');
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 300; i++) {
      const labels: Record<string, string> = {};
      for (let l = 0; l < 50; l++) labels[`l${l}`] = `${i}:${'v'.repeat(4_000)}`;
      const big = input({ labels });
      cache.put(big, result('s1'));
      expect(cache.get('s1', big)?.ruleId).toBe('r');
    }
    gc();
    const grownMb = (process.memoryUsage().heapUsed - before) / 1e6;
    expect(cache.size).toBe(300);
    // before P173 each entry kept its ~200 KB key: about 60 MB here
    expect(grownMb).toBeLessThan(15);
  });
});

