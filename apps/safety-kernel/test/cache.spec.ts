import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decision } from '@cordum/protocol';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { startReplica, type KernelReplica } from './kernel-harness';

// Decision cache (SAFETY_DECISION_CACHE_TTL / _MAX_SIZE) against real Redis and NATS.

const POLICY = `
version: 1
default_decision: deny
rules:
  - id: throttle-llm
    match: { topics: ["job.llm.>"] }
    decision: throttle
    velocity: { max_requests: 2, window_seconds: 60, key: tenant }
  - id: human-for-prod
    match: { labels: { env: prod } }
    decision: require_approval
  - id: allow-jobs
    match: { topics: ["job.>"] }
    decision: allow
`;

let redis: TestServer;
let nats: TestServer;
let dir: string;
let policyPath: string;
let lru: KernelReplica; // TTL 60 s, max 3 entries
let short: KernelReplica; // TTL 300 ms

const HITS = 'cordum_safety_decision_cache_hits_total';
const MISSES = 'cordum_safety_decision_cache_misses_total';
const LOOKUPS = 'cordum_safety_decision_cache_lookups_total';
const SIZE = 'cordum_safety_decision_cache_size';

async function counters(r: KernelReplica): Promise<{ hits: number; misses: number; lookups: number; size: number }> {
  return { hits: await r.metric(HITS), misses: await r.metric(MISSES), lookups: await r.metric(LOOKUPS), size: await r.metric(SIZE) };
}

beforeAll(async () => {
  [redis, nats] = await Promise.all([startRedis(), startNats()]);
  dir = mkdtempSync(join(tmpdir(), 'cordum-sk-cache-'));
  policyPath = join(dir, 'safety.yaml');
  writeFileSync(policyPath, POLICY);
  const env = { REDIS_URL: redis.url, NATS_URL: nats.url, SAFETY_POLICY_PATH: policyPath };
  lru = await startReplica({ ...env, SAFETY_DECISION_CACHE_TTL: '60s', SAFETY_DECISION_CACHE_MAX_SIZE: '3' }, 'sk-cache-lru');
  short = await startReplica({ ...env, SAFETY_DECISION_CACHE_TTL: '300ms' }, 'sk-cache-short');
});

afterAll(async () => {
  await lru?.close();
  await short?.close();
  await redis?.stop();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('decision cache', () => {
  it('serves a repeated request from the cache; Check and Evaluate share it', async () => {
    const before = await counters(lru);
    const first = await lru.client.check({ jobId: 'a1', topic: 'job.echo', tenant: 'hit', labels: { team: 'x', env: 'dev' } });
    expect(first.decision).toBe(Decision.ALLOW);
    // another job, same request fields (labels given in another order): served from the cache
    const again = await lru.client.check({ jobId: 'a2', topic: 'job.echo', tenant: 'hit', labels: { env: 'dev', team: 'x' } });
    const evald = await lru.client.evaluate({ jobId: 'a3', topic: 'job.echo', tenant: 'hit', labels: { team: 'x', env: 'dev' } });
    for (const r of [again, evald]) {
      expect(r).toMatchObject({ decision: Decision.ALLOW, ruleId: 'allow-jobs', policySnapshot: first.policySnapshot, reason: first.reason });
    }
    const after = await counters(lru);
    expect(after.misses - before.misses).toBe(1);
    expect(after.hits - before.hits).toBe(2);
    expect(after.lookups - before.lookups).toBe(3);
    expect(after.size).toBe(lru.kernel.decisionCacheSize);
    expect(after.size).toBeGreaterThanOrEqual(1);
    // Explain is never cached: it evaluates (with a trace) and does not touch the counters
    const ex = await lru.client.explain({ jobId: 'a4', topic: 'job.echo', tenant: 'hit', labels: { team: 'x' } });
    expect(ex.trace.length).toBeGreaterThan(0);
    expect((await counters(lru)).lookups).toBe(after.lookups);
  });

  it("a hold served from the cache names the asking job in approval_ref, not the cached one's (P204)", async () => {
    const before = await counters(lru);
    const first = await lru.client.check({ jobId: 'hold-1', topic: 'job.deploy', tenant: 'ref', labels: { env: 'prod' } });
    const again = await lru.client.check({ jobId: 'hold-2', topic: 'job.deploy', tenant: 'ref', labels: { env: 'prod' } });
    expect(first).toMatchObject({ decision: Decision.REQUIRE_HUMAN, approvalRequired: true, approvalRef: 'hold-1' });
    expect(again).toMatchObject({ decision: Decision.REQUIRE_HUMAN, approvalRequired: true, approvalRef: 'hold-2' });
    expect((await counters(lru)).hits - before.hits).toBe(1);
    // An allow names no approval.
    expect((await lru.client.check({ jobId: 'ok-1', topic: 'job.echo', tenant: 'ref' })).approvalRef).toBe('');
  });

  it('never caches a request whose path reads a velocity window: the N+1th Check still throttles', async () => {
    const before = await counters(lru);
    const req = (jobId: string) => ({ jobId, topic: 'job.llm.chat', tenant: 'velo' });
    // under the limit the throttle rule falls through to allow-jobs: this ALLOW must not be cached
    expect((await lru.client.check(req('v1'))).decision).toBe(Decision.ALLOW);
    expect((await lru.client.check(req('v2'))).decision).toBe(Decision.ALLOW);
    const third = await lru.client.check(req('v3'));
    expect(third.decision).toBe(Decision.THROTTLE);
    expect(third.retryAfterMs).toBeGreaterThan(0n);
    expect((await lru.client.evaluate(req('v4'))).decision).toBe(Decision.THROTTLE);
    expect((await lru.client.check(req('v5'))).decision).toBe(Decision.THROTTLE);
    const after = await counters(lru);
    expect(after.hits).toBe(before.hits);
    expect(after.misses - before.misses).toBe(5);
    expect(after.size).toBe(before.size);
  });

  it('holds at most SAFETY_DECISION_CACHE_MAX_SIZE entries, evicting the least recently used', async () => {
    const req = (tenant: string) => ({ jobId: `l-${tenant}`, topic: 'job.echo', tenant });
    for (const t of ['t-a', 't-b', 't-c', 't-d']) await lru.client.check(req(t));
    expect(lru.kernel.decisionCacheSize).toBe(3);
    expect(await lru.metric(SIZE)).toBe(3);
    const before = await counters(lru);
    await lru.client.check(req('t-d')); // most recent: still there
    expect((await counters(lru)).hits - before.hits).toBe(1);
    await lru.client.check(req('t-a')); // oldest: evicted
    const after = await counters(lru);
    expect(after.misses - before.misses).toBe(1);
    expect(after.size).toBe(3);
  });

  it('is flushed when the snapshot changes, so no decision of the old policy is served', async () => {
    const req = { jobId: 'f1', topic: 'job.deploy', tenant: 'flush', labels: { env: 'prod' } };
    const old = await lru.client.check(req);
    expect(old.decision).toBe(Decision.REQUIRE_HUMAN);
    const hitsBefore = await lru.metric(HITS);
    expect((await lru.client.check(req)).decision).toBe(Decision.REQUIRE_HUMAN);
    expect(await lru.metric(HITS)).toBe(hitsBefore + 1);

    writeFileSync(policyPath, POLICY.replace('decision: require_approval', 'decision: deny'));
    const reload = await lru.kernel.reloadPolicy();
    expect(reload).toMatchObject({ ok: true, changed: true });
    expect(lru.kernel.decisionCacheSize).toBe(0);
    expect(await lru.metric(SIZE)).toBe(0);
    const now = await lru.client.check(req);
    expect(now.decision).toBe(Decision.DENY);
    expect(now.policySnapshot).toBe(lru.kernel.snapshotId);
    expect(now.policySnapshot).not.toBe(old.policySnapshot);

    // back to the original file: the same snapshot id again, and no stale DENY from the cache
    writeFileSync(policyPath, POLICY);
    expect(await lru.kernel.reloadPolicy()).toMatchObject({ ok: true, snapshotId: old.policySnapshot });
    expect((await lru.client.check(req)).decision).toBe(Decision.REQUIRE_HUMAN);
  });

  it('misses again once the TTL has passed since the entry was written', async () => {
    const req = { jobId: 't1', topic: 'job.echo', tenant: 'ttl' };
    const written = Date.now();
    await short.client.check(req);
    const base = await counters(short);
    // Keeps reading the entry: reads must not extend its life.
    await waitFor(
      async () => {
        await short.client.check(req);
        return (await short.metric(MISSES)) > base.misses;
      },
      5000,
      { message: 'entry expired' },
    );
    expect(Date.now() - written).toBeGreaterThanOrEqual(300);
    expect(await short.metric(HITS)).toBeGreaterThan(base.hits); // the reads did find the entry while it lived
  });

  it('exposes the cache metrics on /metrics', async () => {
    const text = await (await fetch(`http://127.0.0.1:${lru.kernel.httpPort}/metrics`)).text();
    for (const name of [HITS, MISSES, LOOKUPS]) expect(text).toMatch(new RegExp(`^${name}\\{[^}]*\\} [1-9]`, 'm'));
    expect(text).toMatch(new RegExp(`^${SIZE}\\{[^}]*\\} [0-9]`, 'm'));
  });
});
