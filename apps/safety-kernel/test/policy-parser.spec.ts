import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '@cordum/testing';
import { canonicalJson, snapshotId } from '../src/policy/canonical';
import { evaluatePolicy, type CheckInput, type VelocityPort } from '../src/policy/evaluator';
import { PolicyLoadError, composePolicy, parseSafetySection, validatePolicy } from '@cordum/config-overlay';
import { parsePolicy, toSnapshot } from '../src/policy/parse';
import { BUILTIN_DEFAULT_POLICY } from '../src/policy/source';

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

const CONTRACT_EXAMPLE = `
version: 1
default_decision: deny
rules:
  - id: block-destructive
    match: { topics: ["job.*.delete-all", "job.admin.*"], risk_tags: ["destructive"] }
    decision: deny
    reason: destructive operations are not allowed
  - id: human-for-prod
    match: { tenants: ["acme"], labels: { env: prod } }
    decision: require_approval
    reason: production changes need a human
  - id: throttle-llm
    match: { topics: ["job.llm.*"] }
    decision: throttle
    velocity: { max_requests: 100, window_seconds: 60, key: tenant }
  - id: bounded
    match: { topics: ["job.batch.*"] }
    decision: allow_with_constraints
    constraints: { max_runtime_ms: 1000, max_retries: 2 }
  - id: default-allow
    match: { topics: ["job.*"] }
    decision: allow
`;

function loadError(yaml: string): string {
  try {
    parsePolicy(yaml);
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyLoadError);
    expect((err as PolicyLoadError).code).toBe('policy_invalid');
    return (err as Error).message;
  }
  throw new Error('expected a load error');
}

describe('policy parser', () => {
  it('parses the CONTRACT §8 example with every rule kind', () => {
    const p = parsePolicy(CONTRACT_EXAMPLE);
    expect(p.default_decision).toBe('deny');
    expect(p.rules.map((r) => r.id)).toEqual(['block-destructive', 'human-for-prod', 'throttle-llm', 'bounded', 'default-allow']);
    expect(p.rules[2]?.velocity).toEqual({ max_requests: 100, window_seconds: 60, key: 'tenant' });
    expect(p.rules[3]?.constraints).toEqual({ max_runtime_ms: 1000, max_retries: 2 });
  });

  it('rejects an unknown match key naming the rule id and the field path', () => {
    const msg = loadError(`
version: 1
default_decision: deny
rules:
  - id: ok-rule
    match: { topics: ["job.>"] }
    decision: allow
  - id: typo-rule
    match: { topic: ["job.>"] }
    decision: allow
`);
    expect(msg).toContain("rule 'typo-rule'");
    expect(msg).toContain('match.topic');
    expect(msg).toContain('unknown key');
  });

  it('rejects an own __proto__ key, which zod would drop: labels {__proto__: x} loaded as {} and matched every job (P174)', () => {
    const msg = loadError(`
version: 1
default_decision: deny
rules:
  - id: trusted-only
    match: { topics: ["job.>"], labels: { __proto__: trusted } }
    decision: allow
`);
    expect(msg).toBe("rule 'trusted-only' (rules[0]): match.labels.__proto__: key __proto__ is not allowed");
    expect(() => validatePolicy(JSON.parse('{"version":1,"default_decision":"deny","rules":[],"__proto__":{}}'))).toThrow('policy: __proto__: key __proto__ is not allowed');
  });

  it('rejects an unknown top-level or rule key', () => {
    expect(loadError('version: 1\ndefault_decision: deny\nrulez: []\n')).toContain('rulez: unknown key');
    expect(loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: r1\n    decision: allow\n    priority: 3\n')).toMatch(/rule 'r1'.*priority: unknown key/);
  });

  it('rejects an unknown decision naming the rule and the value', () => {
    const msg = loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: r-bad\n    match: {}\n    decision: maybe\n');
    expect(msg).toContain("rule 'r-bad'");
    expect(msg).toContain('decision');
    expect(msg).toContain('"maybe"');
  });

  it('rejects an unknown default_decision and a wrong version', () => {
    expect(loadError('version: 1\ndefault_decision: require_approval\n')).toContain('default_decision');
    expect(loadError('version: 2\ndefault_decision: deny\n')).toContain('version');
  });

  it('rejects a topic pattern the matcher could never match (it would silently allow)', () => {
    const rule = (topic: string): string => `version: 1\ndefault_decision: allow\nrules:\n  - id: deny-admin\n    match: { topics: ["${topic}"] }\n    decision: deny\n`;
    expect(loadError(rule('job.>.admin'))).toMatch(/rule 'deny-admin'.*'>' may only be the last segment/);
    expect(loadError(rule('job.ad*'))).toMatch(/rule 'deny-admin'.*must be whole segments/);
    expect(loadError(rule('job..admin'))).toMatch(/rule 'deny-admin'.*empty segment/);
    // `*` alone is refused: it matches one-segment topics only, and every job topic has two or more.
    for (const ok of ['job.>', 'job.*.admin', '>', '*.admin', 'job.admin']) expect(parsePolicy(rule(ok)).rules[0]?.match?.topics).toEqual([ok]);
  });

  it('rejects duplicate rule ids', () => {
    const msg = loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: a\n    decision: allow\n  - id: a\n    decision: deny\n');
    expect(msg).toContain("rule 'a' (rules[1])");
    expect(msg).toContain('duplicate');
  });

  it('requires velocity for throttle and constraints for allow_with_constraints', () => {
    expect(loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: t\n    decision: throttle\n')).toMatch(/rule 't'.*velocity/);
    expect(loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: c\n    decision: allow_with_constraints\n')).toMatch(/rule 'c'.*constraints/);
    expect(loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: v\n    decision: throttle\n    velocity: { max_requests: 1, window_seconds: 1, key: ip }\n')).toMatch(
      /rule 'v'.*velocity\.key/,
    );
    expect(
      loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: k\n    decision: allow_with_constraints\n    constraints: { max_runtime: 5 }\n'),
    ).toMatch(/rule 'k'.*constraints\.max_runtime: unknown key/);
  });

  it('a missing field is "required", and every problem is named in one line, not the first and a count', () => {
    expect(loadError('version: 1\nrules: []\n')).toBe('policy: default_decision: required (one of allow|deny)');
    const msg = loadError('version: 1\nrules:\n  - id: a\n    decision: maybe\n  - decision: deny\n');
    expect(msg).toContain('policy: default_decision: required (one of allow|deny)');
    expect(msg).toContain("rule 'a' (rules[0]): decision: unknown decision \"maybe\"");
    expect(msg).toMatch(/rule '#1' \(rules\[1\]\): id: required/);
    expect(msg).not.toContain('more)');
    expect(msg).not.toContain('\n');
  });

  it('reports YAML syntax errors on one line', () => {
    const msg = loadError('version: 1\ndefault_decision: [deny\n');
    expect(msg).toMatch(/^YAML syntax/);
    expect(msg).not.toContain('\n');
    // P217: not ending in the colon that introduced the code excerpt left out
    expect(msg).toMatch(/at line \d+, column \d+$/);
  });

  it('an unknown tag is a YAML error, not a warning printed raw on stderr and a rule read with a plain string in its place', () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const stderr = jest.spyOn(process.stderr, 'write');
    try {
      const msg = loadError('version: 1\ndefault_decision: deny\nrules:\n  - id: t\n    decision: !!js/function "function () {}"\n');
      expect(msg).toMatch(/^YAML syntax: .*js\/function/);
      expect(msg).not.toContain('\n');
      expect(warn).not.toHaveBeenCalled();
      expect(stderr).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
      stderr.mockRestore();
    }
    // an alias bomb is refused too
    const bomb = ['version: 1', 'default_decision: deny', 'a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i <= 8; i++) bomb.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
    expect(loadError(`${bomb.join('\n')}\nrules: []\n`)).toMatch(/^YAML syntax: .*alias/i);
  });

  it.each([
    'version: 1\ndefault_decision: deny\na: &a ["x", *a]\n',
    'version: 1\ndefault_decision: deny\nx: &x {k: *x}\n',
    'version: 1\ndefault_decision: deny\nx: &x {<<: *x}\n',
    'version: 1\ndefault_decision: deny\nrules:\n  - &r\n    id: r\n    decision: deny\n    match: {labels: *r}\n',
  ])('refuses an alias inside its own anchor at once, instead of walking it forever (P211): %j', (yaml) => {
    const started = Date.now();
    expect(loadError(yaml)).toMatch(/^YAML syntax: an alias refers to its own anchor/);
    expect(Date.now() - started).toBeLessThan(5_000); // walking it would never end
  });

  it('still takes an alias used twice outside itself (a shared value is not a cycle)', () => {
    const p = parsePolicy('version: 1\ndefault_decision: deny\nrules:\n  - id: a\n    match: {topics: &t ["job.a"]}\n    decision: allow\n  - id: b\n    match: {topics: *t}\n    decision: deny\n');
    expect(p.rules.map((r) => r.match.topics)).toEqual([['job.a'], ['job.a']]);
  });

  it('treats require_human as an alias of require_approval (same snapshot id)', () => {
    const a = parsePolicy('version: 1\ndefault_decision: deny\nrules:\n  - id: h\n    decision: require_human\n');
    const b = parsePolicy('version: 1\ndefault_decision: deny\nrules:\n  - id: h\n    decision: require_approval\n');
    expect(a.rules[0]?.decision).toBe('require_approval');
    expect(snapshotId(a)).toBe(snapshotId(b));
  });
});

describe('snapshot id', () => {
  it('is the SHA-256 hex of the canonical JSON and stable across key order', () => {
    const a = parsePolicy('version: 1\ndefault_decision: deny\nrules:\n  - id: r\n    match: { topics: ["job.>"], tenants: [t] }\n    decision: allow\n');
    const b = parsePolicy('rules:\n  - decision: allow\n    match: { tenants: [t], topics: ["job.>"] }\n    id: r\ndefault_decision: deny\nversion: 1\n');
    expect(snapshotId(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(snapshotId(a)).toBe(snapshotId(b));
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}');
  });

  it('changes when the policy changes', () => {
    const a = parsePolicy('version: 1\ndefault_decision: deny\n');
    const b = parsePolicy('version: 1\ndefault_decision: allow\n');
    expect(snapshotId(a)).not.toBe(snapshotId(b));
  });
});

describe('shipped config/safety.yaml', () => {
  const snap = toSnapshot(parsePolicy(readFileSync(join(repoRoot, 'config/safety.yaml'), 'utf8')), 0);

  it('has no rules and default_decision allow (P11: bundles stay reachable for job topics)', () => {
    expect(snap.policy.default_decision).toBe('allow');
    expect(snap.policy.rules).toEqual([]);
    expect(snap.id).toBe(toSnapshot(BUILTIN_DEFAULT_POLICY, 0).id);
  });

  it.each(['job.echo', 'job.default', 'job.a.b.c'])('allows %s by default', async (topic) => {
    const r = await evaluatePolicy(snap, input({ topic }), noVelocity, 'record');
    expect(r.verdict).toBe('allow');
    expect(r.ruleId).toBe('');
  });

  it('lets a bundle deny a job topic (the rule is reachable, P11)', async () => {
    const bundles = parseSafetySection({ bundles: { ops: { rules: [{ id: 'deny-admin', match: { topics: ['job.admin.>'] }, decision: 'deny' }] } } });
    const composed = toSnapshot(composePolicy(snap.policy, bundles), 0);
    expect((await evaluatePolicy(composed, input({ topic: 'job.admin.drop' }), noVelocity, 'record')).ruleId).toBe('deny-admin');
    expect((await evaluatePolicy(composed, input({ topic: 'job.echo' }), noVelocity, 'record')).verdict).toBe('allow');
  });

  it('validatePolicy accepts an object as well as YAML', () => {
    expect(validatePolicy({ version: 1, default_decision: 'allow' }).rules).toEqual([]);
  });
});
