import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startRedis, type TestServer } from '@cordum/testing';
import { safetyKeys } from '../src/keys';
import { evaluatePolicy, simulationVelocity, type CheckInput, type VelocityQuery } from '../src/policy/evaluator';
import { parsePolicy, toSnapshot } from '../src/policy/parse';
import { createRedisVelocity } from '../src/velocity/redis-velocity';

let server: TestServer;
let redis: RedisClient;
let clock = 1_000_000;
const now = () => clock;

beforeAll(async () => {
  server = await startRedis();
  redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
});

afterAll(async () => {
  await closeRedis(redis);
  await server.stop();
});

const q = (over: Partial<VelocityQuery>): VelocityQuery => ({ ruleId: 'r', keyKind: 'tenant', keyValue: 't1', jobId: 'j', maxRequests: 3, windowMs: 60_000, ...over });

describe('redis velocity window', () => {
  it('admits N, then is over with retry_after_ms > 0; a job id counts once; the window slides', async () => {
    const v = createRedisVelocity(redis, { now });
    const base = { ruleId: 'slide' };
    for (const id of ['a', 'b', 'c']) {
      expect(await v.record(q({ ...base, jobId: id }))).toMatchObject({ over: false });
      clock += 1000;
    }
    const over = await v.record(q({ ...base, jobId: 'd' }));
    expect(over.over).toBe(true);
    // the oldest entry ('a') was admitted 3 s ago in a 60 s window
    expect(over.retryAfterMs).toBe(57_000);
    // re-checking an admitted job is not a new request
    expect(await v.record(q({ ...base, jobId: 'a' }))).toEqual({ over: false, count: 3, retryAfterMs: 0 });
    expect(await redis.zcard(safetyKeys.velocity('slide', 'tenant', 't1'))).toBe(3);
    // once 'a' leaves the window, 'd' fits
    clock += 57_000;
    expect(await v.record(q({ ...base, jobId: 'd' }))).toMatchObject({ over: false, count: 3 });
  });

  it('peek never records', async () => {
    const v = createRedisVelocity(redis, { now });
    const base = { ruleId: 'peek', maxRequests: 1 };
    expect(await v.peek(q({ ...base, jobId: 'x' }))).toMatchObject({ over: false, count: 0 });
    expect(await redis.exists(safetyKeys.velocity('peek', 'tenant', 't1'))).toBe(0);
    await v.record(q({ ...base, jobId: 'x' }));
    expect(await v.peek(q({ ...base, jobId: 'x' }))).toMatchObject({ over: false });
    const p = await v.peek(q({ ...base, jobId: 'y' }));
    expect(p.over).toBe(true);
    expect(p.retryAfterMs).toBeGreaterThan(0);
    expect(await redis.zcard(safetyKeys.velocity('peek', 'tenant', 't1'))).toBe(1);
  });

  // P332: the retry time was when the oldest entry leaves, right only for a window exactly full.
  it('over a limit lowered below the window\'s count, retry_after_ms is when a place really frees (record and peek)', async () => {
    const v = createRedisVelocity(redis, { now });
    const base = { ruleId: 'lowered', maxRequests: 100 };
    for (let i = 0; i < 20; i++) {
      expect((await v.record(q({ ...base, jobId: `a${i}` }))).over).toBe(false);
      clock += 500;
    }
    // The operator lowers the limit to 10: 20 entries, admitted 0.5 s apart, the oldest 10 s ago.
    const lowered = { ...base, maxRequests: 10 };
    const over = await v.record(q({ ...lowered, jobId: 'late' }));
    // A place frees once 11 entries have left: the 11th oldest, admitted 5 s after the first.
    expect(over).toEqual({ over: true, count: 20, retryAfterMs: 60_000 - 10_000 + 5_000 });
    expect(await v.peek(q({ ...lowered, jobId: 'late' }))).toEqual(over);
    // Waiting that long is enough (before: 50 s early, then 0.5 s at a time).
    clock += over.retryAfterMs;
    expect(await v.record(q({ ...lowered, jobId: 'late' }))).toMatchObject({ over: false });
  });

  it('keeps separate windows per key value', async () => {
    const v = createRedisVelocity(redis, { now });
    const base = { ruleId: 'sep', maxRequests: 1 };
    expect((await v.record(q({ ...base, keyValue: 'A', jobId: '1' }))).over).toBe(false);
    expect((await v.record(q({ ...base, keyValue: 'B', jobId: '2' }))).over).toBe(false);
    expect((await v.record(q({ ...base, keyValue: 'A', jobId: '3' }))).over).toBe(true);
  });
});

describe('throttle rules through the evaluator (D20)', () => {
  const snap = toSnapshot(
    parsePolicy(`
version: 1
default_decision: deny
rules:
  - id: throttle-llm
    match: { topics: ["job.llm.>"] }
    decision: throttle
    velocity: { max_requests: 2, window_seconds: 10, key: principal }
  - id: allow-jobs
    match: { topics: ["job.>"] }
    decision: allow
`),
    0,
  );
  const input = (jobId: string, principalId = 'alice'): CheckInput => ({
    jobId,
    tenant: 't',
    topic: 'job.llm.chat',
    principalId,
    capability: '',
    riskTags: [],
    requires: [],
    labels: {},
    actorType: '',
  });

  it('under the limit the throttle rule falls through; over it → throttle; Evaluate does not count', async () => {
    const v = createRedisVelocity(redis, { now });
    // Evaluate-style (peek) calls for many fresh jobs use none of the budget.
    for (let i = 0; i < 5; i++) expect((await evaluatePolicy(snap, input(`e${i}`), v, 'peek')).verdict).toBe('allow');

    const first = await evaluatePolicy(snap, input('j1'), v, 'record');
    expect(first).toMatchObject({ verdict: 'allow', ruleId: 'allow-jobs' });
    expect(first.trace[0]).toMatchObject({ ruleId: 'throttle-llm', matched: false });
    expect((await evaluatePolicy(snap, input('j2'), v, 'record')).verdict).toBe('allow');
    // j1 again (a redelivery) is the same job: still allowed, not counted twice
    expect((await evaluatePolicy(snap, input('j1'), v, 'record')).verdict).toBe('allow');

    const third = await evaluatePolicy(snap, input('j3'), v, 'record');
    expect(third).toMatchObject({ verdict: 'throttle', ruleId: 'throttle-llm' });
    expect(third.retryAfterMs).toBeGreaterThan(0);
    // Evaluate now sees the full window too, without adding to it
    expect((await evaluatePolicy(snap, input('e9'), v, 'peek')).verdict).toBe('throttle');
    // another principal has its own window
    expect((await evaluatePolicy(snap, input('k1', 'bob'), v, 'record')).verdict).toBe('allow');
    // and so has the same principal id in another tenant (P76): alice of t2 is not alice of t
    expect((await evaluatePolicy(snap, { ...input('x1'), tenant: 't2' }, v, 'record')).verdict).toBe('allow');
    expect(await redis.zcard(safetyKeys.velocity('throttle-llm', 'principal', 't/alice'))).toBe(2);
    expect(await redis.zcard(safetyKeys.velocity('throttle-llm', 'principal', 't2/alice'))).toBe(1);
  });
});

// P332: Check recorded a job in every window it passed before the rules further down decided;
// a job throttled by a later rule or denied kept its places though it did not run.
describe('a job keeps a place in a velocity window only when it is let go or held (P332)', () => {
  const snap = toSnapshot(
    parsePolicy(`
version: 1
default_decision: allow
rules:
  - id: per-tenant
    match: { topics: ["job.>"] }
    decision: throttle
    velocity: { max_requests: 4, window_seconds: 60, key: tenant }
  - id: per-llm
    match: { topics: ["job.llm.>"] }
    decision: throttle
    velocity: { max_requests: 1, window_seconds: 60, key: topic }
  - id: no-destructive
    match: { risk_tags: [destructive] }
    decision: deny
  - id: hold-payments
    match: { topics: ["job.pay.>"] }
    decision: require_approval
`),
    0,
  );
  const input = (jobId: string, topic: string, riskTags: string[] = []): CheckInput => ({ jobId, tenant: 'p332', topic, principalId: 'p', capability: '', riskTags, requires: [], labels: {}, actorType: '' });

  it('throttled by a later rule or denied: no place kept; allowed or held: one in each window it passed', async () => {
    const v = createRedisVelocity(redis, { now });
    const tenantWindow = safetyKeys.velocity('per-tenant', 'tenant', 'p332');
    expect((await evaluatePolicy(snap, input('llm-1', 'job.llm.chat'), v, 'record')).verdict).toBe('allow');
    expect((await evaluatePolicy(snap, input('llm-2', 'job.llm.chat'), v, 'record'))).toMatchObject({ verdict: 'throttle', ruleId: 'per-llm' });
    expect((await evaluatePolicy(snap, input('llm-3', 'job.llm.chat'), v, 'record'))).toMatchObject({ verdict: 'throttle', ruleId: 'per-llm' });
    expect((await evaluatePolicy(snap, input('rm-1', 'job.echo', ['destructive']), v, 'record')).verdict).toBe('deny');
    // A hold keeps its place: its re-check after the approval answers require_approval again (D18).
    expect((await evaluatePolicy(snap, input('pay-1', 'job.pay.out'), v, 'record')).verdict).toBe('require_approval');
    expect((await evaluatePolicy(snap, input('pay-1', 'job.pay.out'), v, 'record')).verdict).toBe('require_approval');
    // Before: 5 places (llm-1, llm-2, llm-3, rm-1, pay-1), and the tenant's next job throttled.
    expect(new Set(await redis.zrange(tenantWindow, '0', '-1'))).toEqual(new Set(['llm-1', 'pay-1']));
    expect((await evaluatePolicy(snap, input('echo-1', 'job.echo'), v, 'record')).verdict).toBe('allow');
    expect((await evaluatePolicy(snap, input('echo-2', 'job.echo'), v, 'record')).verdict).toBe('allow');
    expect(await redis.zcard(tenantWindow)).toBe(4);
    expect((await evaluatePolicy(snap, input('echo-3', 'job.echo'), v, 'record'))).toMatchObject({ verdict: 'throttle', ruleId: 'per-tenant' });
  });

  it('a re-check that is denied does not take back a place an earlier Check of the job kept', async () => {
    const v = createRedisVelocity(redis, { now });
    const window = safetyKeys.velocity('per-tenant', 'tenant', 'p332-recheck');
    const job = { ...input('ran-once', 'job.echo'), tenant: 'p332-recheck' };
    expect((await evaluatePolicy(snap, job, v, 'record')).verdict).toBe('allow');
    // The retry's Check is denied (a rule added since): the place of the attempt that ran stays.
    expect((await evaluatePolicy(snap, { ...job, riskTags: ['destructive'] }, v, 'record')).verdict).toBe('deny');
    expect(await redis.zrange(window, '0', '-1')).toEqual(['ran-once']);
  });
});

describe('Simulate reads live windows only for rules in force (P76)', () => {
  const active = toSnapshot(parsePolicy(`
version: 1
default_decision: allow
rules:
  - id: globex-llm
    match: { tenants: [globex], topics: [job.llm.x] }
    decision: throttle
    velocity: { max_requests: 2, window_seconds: 60, key: topic }
`), 0);
  const input = (jobId: string, tenant: string): CheckInput => ({ jobId, tenant, topic: 'job.llm.x', principalId: 'p', capability: '', riskTags: [], requires: [], labels: {}, actorType: '' });

  it('a candidate reusing another tenant\'s rule id with a wider match sees an empty window; the rule as in force sees the live one', async () => {
    const v = createRedisVelocity(redis, { now });
    for (const id of ['g1', 'g2']) await evaluatePolicy(active, input(id, 'globex'), v, 'record');
    expect(await redis.zcard(safetyKeys.velocity('globex-llm', 'topic', 'job.llm.x'))).toBe(2);
    const wider = toSnapshot(parsePolicy(`
version: 1
default_decision: allow
rules:
  - id: globex-llm
    match: { topics: [job.llm.x] }
    decision: throttle
    velocity: { max_requests: 2, window_seconds: 60, key: topic }
`), 0);
    // read straight, the wider candidate would show acme globex's count and throttle it
    expect((await evaluatePolicy(wider, input('a1', 'acme'), v, 'peek')).verdict).toBe('throttle');
    const sim = await evaluatePolicy(wider, input('a1', 'acme'), simulationVelocity(active, wider, v), 'peek');
    expect(sim.verdict).toBe('allow');
    expect(sim.trace[0]?.why).toContain('(0/2');
    // the rule exactly as in force reads the live window: globex is over now
    expect((await evaluatePolicy(active, input('g3', 'globex'), simulationVelocity(active, active, v), 'peek')).verdict).toBe('throttle');
    // and a simulation never records
    expect(await redis.zcard(safetyKeys.velocity('globex-llm', 'topic', 'job.llm.x'))).toBe(2);
  });
});
