import { evaluatePolicy, whyNotMatched, type CheckInput, type VelocityPort } from '../src/policy/evaluator';
import { topicMatches } from '@cordum/config-overlay';
import { parsePolicy, toSnapshot } from '../src/policy/parse';

const noVelocity: VelocityPort = {
  record: () => Promise.reject(new Error('velocity must not be consulted')),
  peek: () => Promise.reject(new Error('velocity must not be consulted')),
  unrecord: () => Promise.reject(new Error('velocity must not be consulted')),
};

const input = (over: Partial<CheckInput> = {}): CheckInput => ({
  jobId: 'j1',
  tenant: 'acme',
  topic: 'job.echo',
  principalId: 'p1',
  capability: '',
  riskTags: [],
  requires: [],
  labels: {},
  actorType: '',
  ...over,
});

describe('topic glob', () => {
  it.each([
    ['job.*', 'job.a', true],
    ['job.*', 'job.a.b', false],
    ['job.*', 'job', false],
    ['job.>', 'job.a', true],
    ['job.>', 'job.a.b.c', true],
    ['job.>', 'job', false],
    ['job.*.delete', 'job.x.delete', true],
    ['job.*.delete', 'job.x.y.delete', false],
    ['>', 'anything.at.all', true],
    ['job.echo', 'job.echo', true],
    ['job.echo', 'job.echo2', false],
    ['job.>.x', 'job.a.x', false],
  ])('%s vs %s → %s', (pattern, topic, expected) => {
    expect(topicMatches(pattern, topic)).toBe(expected);
  });
});

describe('match keys', () => {
  const m = (match: Parameters<typeof whyNotMatched>[0], over: Partial<CheckInput>) => whyNotMatched(match, input(over));

  it('tenants', () => {
    expect(m({ tenants: ['acme'] }, { tenant: 'acme' })).toBeNull();
    expect(m({ tenants: ['acme'] }, { tenant: 'globex' })).toContain('tenant');
  });
  it('capabilities', () => {
    expect(m({ capabilities: ['fs.write'] }, { capability: 'fs.write' })).toBeNull();
    expect(m({ capabilities: ['fs.write'] }, { capability: 'fs.read' })).toContain('capability');
  });
  it('risk_tags: any of', () => {
    expect(m({ risk_tags: ['destructive', 'pii'] }, { riskTags: ['pii'] })).toBeNull();
    expect(m({ risk_tags: ['destructive', 'pii'] }, { riskTags: ['network'] })).toContain('risk_tags');
    expect(m({ risk_tags: ['destructive'] }, { riskTags: [] })).toContain('risk_tags');
  });
  it('requires: all of', () => {
    expect(m({ requires: ['gpu', 'net'] }, { requires: ['net', 'gpu', 'disk'] })).toBeNull();
    expect(m({ requires: ['gpu', 'net'] }, { requires: ['gpu'] })).toContain('net');
  });
  it('labels: all equal', () => {
    expect(m({ labels: { env: 'prod', team: 'a' } }, { labels: { env: 'prod', team: 'a', x: 'y' } })).toBeNull();
    expect(m({ labels: { env: 'prod', team: 'a' } }, { labels: { env: 'prod', team: 'b' } })).toContain('team');
    expect(m({ labels: { env: 'prod' } }, { labels: {} })).toBe("label env absent != 'prod'");
    expect(m({ labels: { env: 'prod' } }, { labels: { env: '' } })).toBe("label env '' != 'prod'");
  });
  it("labels: a label the job does not carry reads as '' (P207, as in Cordum)", () => {
    expect(m({ labels: { reviewed: '' } }, { labels: {} })).toBeNull();
    expect(m({ labels: { reviewed: '' } }, { labels: { reviewed: '' } })).toBeNull();
    expect(m({ labels: { reviewed: '' } }, { labels: { reviewed: 'yes' } })).toBe("label reviewed 'yes' != ''");
    // An inherited name is not a label the job carries.
    expect(m({ labels: { toString: 'x' } }, { labels: {} })).toBe("label toString absent != 'x'");
  });
  it('actor_types', () => {
    expect(m({ actor_types: ['human'] }, { actorType: 'human' })).toBeNull();
    expect(m({ actor_types: ['human'] }, { actorType: 'service' })).toContain('actor_type');
    expect(m({ actor_types: ['human'] }, { actorType: '' })).toContain('actor_type');
  });
  it('topics', () => {
    expect(m({ topics: ['job.a.*', 'job.b'] }, { topic: 'job.b' })).toBeNull();
    expect(m({ topics: ['job.a.*'] }, { topic: 'job.b' })).toContain('topic');
  });
  it('an empty match matches everything', () => {
    expect(m({}, { topic: 'other.x' })).toBeNull();
  });
});

describe('evaluation', () => {
  const snap = toSnapshot(
    parsePolicy(`
version: 1
default_decision: allow
rules:
  - id: deny-destructive
    match: { topics: ["job.>"], risk_tags: [destructive] }
    decision: deny
    reason: no
  - id: human-prod
    match: { labels: { env: prod } }
    decision: require_human
  - id: bounded
    match: { topics: ["job.batch.*"] }
    decision: allow_with_constraints
    constraints: { max_runtime_ms: 5000, max_retries: 1 }
  - id: allow-jobs
    match: { topics: ["job.>"] }
    decision: allow
`),
    1,
  );

  it('first match wins', async () => {
    const r = await evaluatePolicy(snap, input({ riskTags: ['destructive'], labels: { env: 'prod' } }), noVelocity, 'record');
    expect(r.verdict).toBe('deny');
    expect(r.ruleId).toBe('deny-destructive');
    expect(r.reason).toBe('no');
    expect(r.snapshotId).toBe(snap.id);
  });

  it('falls through to later rules and records why earlier ones did not match', async () => {
    const r = await evaluatePolicy(snap, input({ labels: { env: 'prod' } }), noVelocity, 'peek');
    expect(r.verdict).toBe('require_approval');
    expect(r.ruleId).toBe('human-prod');
    expect(r.trace).toEqual([
      { ruleId: 'deny-destructive', matched: false, why: expect.stringContaining('risk_tags') },
      { ruleId: 'human-prod', matched: true, why: expect.any(String) },
    ]);
  });

  it('returns constraints for allow_with_constraints', async () => {
    const r = await evaluatePolicy(snap, input({ topic: 'job.batch.x' }), noVelocity, 'record');
    expect(r.verdict).toBe('allow_with_constraints');
    expect(r.constraints).toEqual({ max_runtime_ms: 5000, max_retries: 1 });
  });

  it('applies default_decision when nothing matches', async () => {
    const narrow = toSnapshot(parsePolicy('version: 1\ndefault_decision: allow\nrules:\n  - id: a\n    match: { topics: ["job.a.*"] }\n    decision: deny\n  - id: b\n    match: { labels: { env: prod } }\n    decision: deny\n'), 1);
    const r = await evaluatePolicy(narrow, input({ topic: 'job.other' }), noVelocity, 'record');
    expect(r.verdict).toBe('allow');
    expect(r.ruleId).toBe('');
    expect(r.reason).toBe('no rule matched; default_decision allow');
    expect(r.trace).toHaveLength(2);
    expect(r.trace.every((t) => !t.matched)).toBe(true);
  });

  it.each(['', 'other.topic', 'job', 'job..x', 'job.a b', `job.${'x'.repeat(300)}`])(
    'denies %j, which no job can have, whatever default_decision says (P205)',
    async (topic) => {
      const r = await evaluatePolicy(snap, input({ topic }), noVelocity, 'record');
      expect(r).toMatchObject({ verdict: 'deny', ruleId: '', snapshotId: snap.id, velocityConsulted: false });
      expect(r.reason).toMatch(/^invalid topic .*: a job topic matches/);
      expect(r.reason.length).toBeLessThan(200);
    },
  );
});

describe('velocityConsulted (what the decision cache must not store, D20)', () => {
  const snap = toSnapshot(
    parsePolicy(`
version: 1
default_decision: deny
rules:
  - id: throttle-llm
    match: { topics: ["job.llm.>"] }
    decision: throttle
    velocity: { max_requests: 5, window_seconds: 60 }
  - id: allow-jobs
    match: { topics: ["job.>"] }
    decision: allow
`),
    0,
  );
  const velocity = (over: boolean): VelocityPort => ({
    record: () => Promise.resolve({ over, count: over ? 5 : 1, retryAfterMs: over ? 1000 : 0 }),
    peek: () => Promise.resolve({ over, count: over ? 5 : 1, retryAfterMs: over ? 1000 : 0 }),
    unrecord: () => Promise.resolve(),
  });

  it('is false when no throttle rule matched by its conditions', async () => {
    const r = await evaluatePolicy(snap, input({ topic: 'job.echo' }), noVelocity, 'record');
    expect(r).toMatchObject({ verdict: 'allow', velocityConsulted: false });
    const d = await evaluatePolicy(snap, input({ topic: 'other' }), noVelocity, 'peek');
    expect(d).toMatchObject({ verdict: 'deny', ruleId: '', velocityConsulted: false });
  });

  it('is true when an under-limit throttle rule was passed through, and when it throttled', async () => {
    const passed = await evaluatePolicy(snap, input({ topic: 'job.llm.chat' }), velocity(false), 'record');
    expect(passed).toMatchObject({ verdict: 'allow', ruleId: 'allow-jobs', velocityConsulted: true });
    const throttled = await evaluatePolicy(snap, input({ topic: 'job.llm.chat' }), velocity(true), 'peek');
    expect(throttled).toMatchObject({ verdict: 'throttle', velocityConsulted: true });
  });
});
