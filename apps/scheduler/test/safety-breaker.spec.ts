// D21 shared circuit breaker around Check, against a real redis-server: the
// state machine (consecutive failures → open → half-open probes → closed), that
// two replicas share it, and that the wrapped Check port stops calling a dead
// kernel while open.
import type { JobRecord } from '@cordum/job-store';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { createSchedulerMetrics } from '../src/metrics';
import type { SafetyChecker, SafetyVerdict } from '../src/safety';
import { D21_BREAKER, SAFETY_BREAKER_KEY, breakerSafetyChecker, createSharedBreaker, type SharedBreaker } from '../src/safety-breaker';

let server: TestServer;
let r1: RedisClient;
let r2: RedisClient;
let clock = 1_000_000;
const now = (): number => clock;

beforeAll(async () => {
  server = await startRedis();
  r1 = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  r2 = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});
afterAll(async () => {
  await closeRedis(r1);
  await closeRedis(r2);
  await server.stop();
});
beforeEach(async () => {
  await r1.del(SAFETY_BREAKER_KEY);
  clock = 1_000_000;
});

const fail = (b: SharedBreaker, probe = false) => b.report(false, { probe, failures: 1 });

describe('shared breaker state machine (D21 numbers)', () => {
  it('opens after 3 consecutive failures within 30 s, on every replica at once', async () => {
    const a = createSharedBreaker(r1, D21_BREAKER, now);
    const b = createSharedBreaker(r2, D21_BREAKER, now);
    expect(await fail(a)).toEqual({ state: 'closed', transition: false });
    expect(await fail(b)).toEqual({ state: 'closed', transition: false });
    expect(await b.acquire()).toEqual({ allowed: true, probe: false, failures: 2 });
    expect(await fail(a)).toEqual({ state: 'open', transition: true });
    expect(await a.acquire()).toEqual({ allowed: false, state: 'open' });
    expect(await b.acquire()).toEqual({ allowed: false, state: 'open' });
    expect(await r1.pttl(SAFETY_BREAKER_KEY)).toBeGreaterThan(30_000); // window: open + failure window
  });

  it('a success resets the count (consecutive), and failures older than the window do not add up', async () => {
    const a = createSharedBreaker(r1, D21_BREAKER, now);
    await fail(a);
    await fail(a);
    expect(await a.report(true, { probe: false, failures: 2 })).toEqual({ state: 'closed', transition: false });
    await fail(a);
    await fail(a);
    expect((await a.acquire()).allowed).toBe(true);
    clock += 30_001; // the two failures above fall out of the window
    await fail(a);
    await fail(a);
    expect(await a.acquire()).toEqual({ allowed: true, probe: false, failures: 2 });
  });

  it('after 10 s lets one probe per 2 s through; 2 successful probes close it', async () => {
    const a = createSharedBreaker(r1, D21_BREAKER, now);
    const b = createSharedBreaker(r2, D21_BREAKER, now);
    for (let i = 0; i < 3; i++) await fail(a);
    clock += 9_999;
    expect(await a.acquire()).toEqual({ allowed: false, state: 'open' });
    clock += 1;
    const p1 = await a.acquire();
    expect(p1).toEqual({ allowed: true, probe: true, failures: 0 });
    expect(await b.acquire()).toEqual({ allowed: false, state: 'half_open' }); // one probe at a time, across replicas
    expect(await a.report(true, { probe: true, failures: 0 })).toEqual({ state: 'half_open', transition: false });
    clock += 1_999;
    expect((await b.acquire()).allowed).toBe(false);
    clock += 1;
    expect(await b.acquire()).toEqual({ allowed: true, probe: true, failures: 0 });
    expect(await b.report(true, { probe: true, failures: 0 })).toEqual({ state: 'closed', transition: true });
    expect(await a.acquire()).toEqual({ allowed: true, probe: false, failures: 0 });
    expect(await r1.exists(SAFETY_BREAKER_KEY)).toBe(0);
  });

  it('a failed probe opens it again for another 10 s', async () => {
    const a = createSharedBreaker(r1, D21_BREAKER, now);
    for (let i = 0; i < 3; i++) await fail(a);
    clock += 10_000;
    expect((await a.acquire()).allowed).toBe(true);
    expect(await fail(a, true)).toEqual({ state: 'open', transition: true });
    clock += 9_999;
    expect(await a.acquire()).toEqual({ allowed: false, state: 'open' });
    clock += 1;
    expect(await a.acquire()).toEqual({ allowed: true, probe: true, failures: 0 });
  });
});

describe('local closed cache', () => {
  it('admits without Redis for closedCacheMs after a clean acquire, sees another replica\'s open after it, and drops it on a failure', async () => {
    const a = createSharedBreaker(r1, { ...D21_BREAKER, closedCacheMs: 250 }, now);
    const b = createSharedBreaker(r2, D21_BREAKER, now);
    expect(await a.acquire()).toEqual({ allowed: true, probe: false, failures: 0 });
    for (let i = 0; i < 3; i++) await fail(b); // b opens it
    expect((await a.acquire()).allowed).toBe(true); // a's cached "closed"
    clock += 250;
    expect(await a.acquire()).toEqual({ allowed: false, state: 'open' });
    await r1.del(SAFETY_BREAKER_KEY);
    expect((await a.acquire()).allowed).toBe(true);
    await fail(a);
    await fail(b);
    await fail(b); // opened; a's own failure cleared its cache
    expect(await a.acquire()).toEqual({ allowed: false, state: 'open' });
  });
});

describe('breakerSafetyChecker', () => {
  const job = { id: 'j1', tenant: 'acme', topic: 'job.echo' } as JobRecord;

  it('stops calling a failing kernel once open, reports the state in metrics, and closes after successful probes', async () => {
    let calls = 0;
    let up = false;
    const inner: SafetyChecker = {
      check: async (): Promise<SafetyVerdict> => {
        calls++;
        return up ? { kind: 'allow', record: { decision: 'allow', reason: '', ruleId: 'r', policySnapshot: 's' } } : { kind: 'unavailable', error: 'down' };
      },
      close: () => undefined,
    };
    const registry = new Registry();
    const metrics = createSchedulerMetrics(registry);
    const logs: string[] = [];
    const logger = createLogger({ service: 'scheduler', instance: 't', level: 'info', write: (l) => void logs.push(l) });
    const checker = breakerSafetyChecker(inner, createSharedBreaker(r1, D21_BREAKER, now), { metrics, logger });
    const gauge = async () => (await registry.getSingleMetric('cordum_scheduler_safety_breaker_state')?.get())?.values[0]?.value;

    for (let i = 0; i < 3; i++) expect((await checker.check(job)).kind).toBe('unavailable');
    expect(calls).toBe(3);
    expect(await gauge()).toBe(2);
    const refused = await checker.check(job);
    expect(refused).toEqual({ kind: 'unavailable', error: 'safety kernel circuit breaker open' });
    expect(calls).toBe(3); // refused without a call
    expect(logs.some((l) => l.includes('safety kernel circuit breaker opened'))).toBe(true);

    up = true;
    clock += 10_000;
    expect((await checker.check(job)).kind).toBe('allow');
    expect(await gauge()).toBe(1);
    expect((await checker.check(job)).kind).toBe('unavailable'); // half-open, next probe in 2 s
    clock += 2_000;
    expect((await checker.check(job)).kind).toBe('allow');
    expect(await gauge()).toBe(0);
    expect(calls).toBe(5);
    const checks = (await registry.getSingleMetric('cordum_scheduler_safety_checks_total')?.get())?.values ?? [];
    const by = (o: string) => checks.find((v) => v.labels['outcome'] === o)?.value;
    expect({ unavailable: by('unavailable'), breaker_open: by('breaker_open'), allow: by('allow') }).toEqual({ unavailable: 3, breaker_open: 2, allow: 2 });
    const transitions = (await registry.getSingleMetric('cordum_scheduler_safety_breaker_transitions_total')?.get())?.values ?? [];
    expect(transitions.map((v) => [v.labels['to'], v.value]).sort()).toEqual([['closed', 1], ['open', 1]]);
  });

  it('a replica that checks nothing more still shows the breaker closed once another replica closed it (P163)', async () => {
    let up = false;
    const inner: SafetyChecker = {
      check: async (): Promise<SafetyVerdict> => (up ? { kind: 'allow', record: { decision: 'allow', reason: '', ruleId: 'r', policySnapshot: 's' } } : { kind: 'unavailable', error: 'down' }),
      close: () => undefined,
    };
    const quiet = createLogger({ service: 'scheduler', instance: 't', level: 'error', write: () => undefined });
    const replica = (redis: RedisClient) => {
      const registry = new Registry();
      const checker = breakerSafetyChecker(inner, createSharedBreaker(redis, { ...D21_BREAKER, closedCacheMs: 0 }, now), { metrics: createSchedulerMetrics(registry), logger: quiet, gaugeRefreshMs: 50 });
      const gauge = async () => (await registry.getSingleMetric('cordum_scheduler_safety_breaker_state')?.get())?.values[0]?.value;
      return { checker, gauge };
    };
    const a = replica(r1);
    const b = replica(r2);
    try {
      for (let i = 0; i < 3; i++) await b.checker.check(job); // b's failures open it
      await a.checker.check(job); // a sees it open too
      expect([await a.gauge(), await b.gauge()]).toEqual([2, 2]);
      // The kernel is back and only a gets jobs: its two probes close the breaker.
      up = true;
      clock += 10_000;
      await a.checker.check(job);
      clock += 2_000;
      await a.checker.check(job);
      expect(await r1.exists(SAFETY_BREAKER_KEY)).toBe(0);
      expect(await a.gauge()).toBe(0);
      // b checked nothing since; before P163 it exported 2 until its next job
      await waitFor(async () => (await b.gauge()) === 0, 5_000, { message: "b's gauge follows the shared state" });
    } finally {
      void a.checker.close();
      void b.checker.close();
    }
  });

  it('calls the kernel unguarded when Redis cannot hold the breaker state', async () => {
    const dead = createRedis({ url: 'redis://127.0.0.1:1', clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
    let calls = 0;
    const inner: SafetyChecker = { check: async () => (calls++, { kind: 'deny', record: { decision: 'deny', reason: 'x', ruleId: 'r', policySnapshot: 's' } }), close: () => undefined };
    try {
      const checker = breakerSafetyChecker(inner, createSharedBreaker(dead, D21_BREAKER, now), { metrics: createSchedulerMetrics(new Registry()), logger: createLogger({ service: 's', instance: 't', level: 'error', write: () => undefined }) });
      expect((await checker.check(job)).kind).toBe('deny');
      expect(calls).toBe(1);
    } finally {
      await closeRedis(dead); // a client left reconnecting would keep jest from exiting
    }
  });
});
