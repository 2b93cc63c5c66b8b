// Policy values that loaded but could never work, each refused by name where a policy is
// written (validateConfig) and where it is loaded (validatePolicy: the kernel's file, the
// stored safety section):
// - a constraint past its PolicyConstraints wire type (int32 max_retries/max_concurrent_jobs):
//   every Check reaching the rule failed to encode (gRPC INTERNAL), and the scheduler let the
//   job run fail-open;
// - a constraint of 0, which the wire reads as "not set" (max_retries: 0 ran 3 attempts);
// - a tenant or topic glob no job can have: a deny written with it silently allowed.
import { INT32_MAX, MAX_RULE_ID_CHARS, MAX_VELOCITY_WINDOW_SECONDS, POLICY_TENANT_RE } from '../src/policy/model';
import { PolicyLoadError, parseSafetySection, validateConfig, validatePolicy } from '../src';

const rule = (over: Record<string, unknown>): Record<string, unknown> => ({ id: 'r', decision: 'deny', ...over });
const policy = (...rules: Record<string, unknown>[]): unknown => ({ version: 1, default_decision: 'allow', rules });

function loadError(raw: unknown): string {
  try {
    validatePolicy(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyLoadError);
    return (err as Error).message;
  }
  throw new Error('policy loaded');
}

const constrained = (constraints: Record<string, unknown>): unknown => policy(rule({ id: 'c', decision: 'allow_with_constraints', constraints }));

describe('constraints fit their wire type and are never 0', () => {
  it('refuses max_retries and max_concurrent_jobs past int32, naming the rule, the field and the bound', () => {
    expect(loadError(constrained({ max_concurrent_jobs: 3_000_000_000 }))).toBe(
      "rule 'c' (rules[0]): constraints.max_concurrent_jobs: must be a whole number from 1 to 2147483647, got 3000000000 (jobs at once, an int32 on the wire, where 0 means no limit)",
    );
    expect(loadError(constrained({ max_retries: INT32_MAX + 1 }))).toMatch(/^rule 'c' \(rules\[0\]\): constraints\.max_retries: must be a whole number from 1 to 2147483647, got 2147483648/);
    const top = validatePolicy(constrained({ max_retries: INT32_MAX, max_concurrent_jobs: INT32_MAX }));
    expect(top.rules[0]?.constraints).toEqual({ max_retries: INT32_MAX, max_concurrent_jobs: INT32_MAX });
  });

  it('refuses allow_with_constraints with no constraint set (P313)', () => {
    expect(loadError(constrained({}))).toBe(
      "rule 'c' (rules[0]): constraints: set at least one of max_runtime_ms, max_retries, max_artifact_bytes, max_concurrent_jobs: none constrains the job",
    );
    expect(validatePolicy(constrained({ max_retries: 1 })).rules[0]?.constraints).toEqual({ max_retries: 1 });
  });

  it('refuses max_retries: 0 as the total number of attempts (D13), at least 1', () => {
    const msg = loadError(constrained({ max_retries: 0 }));
    expect(msg).toContain("rule 'c' (rules[0]): constraints.max_retries: must be a whole number from 1 to 2147483647, got 0");
    expect(msg).toContain('the total number of attempts, D13: 1 = run once with no retry, while 0 on the wire means the default, 3');
    expect(validatePolicy(constrained({ max_retries: 1 })).rules[0]?.constraints).toEqual({ max_retries: 1 });
  });

  it('refuses 0, negatives, fractions and unsafe integers for every constraint (0 is "not set" on the wire)', () => {
    for (const field of ['max_runtime_ms', 'max_retries', 'max_artifact_bytes', 'max_concurrent_jobs']) {
      for (const v of [0, -1, 1.5, 2 ** 53]) expect(loadError(constrained({ [field]: v }))).toContain(`constraints.${field}: must be a whole number from 1 to `);
    }
    // int64 on the wire: anything a JSON number holds exactly
    const big = validatePolicy(constrained({ max_runtime_ms: Number.MAX_SAFE_INTEGER, max_artifact_bytes: 2 ** 40 }));
    expect(big.rules[0]?.constraints).toEqual({ max_runtime_ms: Number.MAX_SAFE_INTEGER, max_artifact_bytes: 2 ** 40 });
  });
});

describe('a velocity window Redis can expire (P272)', () => {
  const throttled = (window_seconds: unknown): unknown => policy(rule({ id: 'v', decision: 'throttle', velocity: { max_requests: 5, window_seconds } }));
  it('refuses a window past 365 days or not a whole positive number, naming the rule and the field', () => {
    expect(loadError(throttled(100_000_000_000_000))).toBe(
      `rule 'v' (rules[0]): velocity.window_seconds: must be a whole number from 1 to ${MAX_VELOCITY_WINDOW_SECONDS}, got 100000000000000 (seconds, 365 days at most)`,
    );
    expect(loadError(throttled(0))).toContain('velocity.window_seconds: must be a whole number from 1 to');
    expect(loadError(throttled(1.5))).toContain('velocity.window_seconds: must be a whole number from 1 to');
    expect(validatePolicy(throttled(MAX_VELOCITY_WINDOW_SECONDS)).rules[0]?.velocity).toMatchObject({ window_seconds: MAX_VELOCITY_WINDOW_SECONDS });
  });

  it('is refused where a bundle is written too', () => {
    const errors = validateConfig({ safety: { bundles: { b: { rules: [rule({ id: 'v', decision: 'throttle', velocity: { max_requests: 5, window_seconds: 1e14 } })] } } } });
    expect(errors.map((e) => e.message).join('\n')).toContain('velocity.window_seconds: must be a whole number from 1 to');
  });
});

describe('match conditions a job can meet', () => {
  it('refuses a tenant the gateway never admits (D26), and keeps every valid one', () => {
    const msg = loadError(policy(rule({ id: 'deny-acme', match: { tenants: ['Acme', ' acme', 'acme', ''] } })));
    expect(msg).toBe(
      [
        `rule 'deny-acme' (rules[0]): match.tenants[0]: tenant "Acme" can never match: a tenant is ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case, no spaces)`,
        `rule 'deny-acme' (rules[0]): match.tenants[1]: tenant " acme" can never match: a tenant is ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case, no spaces)`,
        `rule 'deny-acme' (rules[0]): match.tenants[3]: tenant "" can never match: a tenant is ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case, no spaces)`,
      ].join('; '),
    );
    expect(loadError(policy(rule({ match: { tenants: ['a'.repeat(64)] } })))).toContain('match.tenants[0]: tenant');
    const ok = ['acme', 'default', '0', 'a-b_c', 'a'.repeat(63)];
    expect(validatePolicy(policy(rule({ match: { tenants: ok } }))).rules[0]?.match.tenants).toEqual(ok);
    // the gateway's TENANT_RE (apps/api-gateway/src/auth/keys.ts), spelled the same
    expect(POLICY_TENANT_RE.source).toBe('^[a-z0-9][a-z0-9_-]{0,62}$');
  });

  it('refuses a topic glob outside the job topic alphabet, and keeps every glob that can match', () => {
    const bad: [string, string][] = [
      ['Job.admin.>', "the first segment must be 'job' (lower case), '*' or '>'"],
      ['admin.>', "the first segment must be 'job' (lower case), '*' or '>'"],
      ['sys.job.submit', "the first segment must be 'job' (lower case), '*' or '>'"],
      ['job.admin tools', `segment "admin tools" has a character other than letters, digits, '_' and '-'`],
      ['job.ädmin', `segment "ädmin" has a character other than letters, digits, '_' and '-'`],
      ['*', 'a job topic has at least two segments'],
      ['job', 'a job topic has at least two segments'],
      [`job.${'x'.repeat(252)}`, 'it is longer than the 255 characters a job topic may have'],
    ];
    for (const [glob, why] of bad) {
      expect(loadError(policy(rule({ id: 'deny-admin', match: { topics: [glob] } })))).toContain(`rule 'deny-admin' (rules[0]): match.topics[0]: topic pattern `);
      expect(loadError(policy(rule({ id: 'deny-admin', match: { topics: [glob] } })))).toContain(`can never match a job topic (^job(\\.[A-Za-z0-9_-]+)+$): ${why}`);
    }
    const ok = ['job.>', '>', '*.>', '*.admin', 'job.*', 'job.admin.delete-all', 'job.Admin_2.x', `job.${'x'.repeat(251)}`];
    expect(validatePolicy(policy(rule({ match: { topics: ok } }))).rules[0]?.match.topics).toEqual(ok);
  });

  it('refuses a rule id longer than an approver may send back as rule_id (P306), where written and where loaded', () => {
    const long = 'r'.repeat(MAX_RULE_ID_CHARS + 1);
    expect(loadError(policy(rule({ id: long, decision: 'require_approval' })))).toContain(`id: must be at most ${MAX_RULE_ID_CHARS} characters: an approver sends it back as rule_id`);
    const written = validateConfig({ safety: { bundles: { b: { rules: [rule({ id: long, decision: 'require_approval' })] } } } });
    expect(written.map((e) => e.message).join('\n')).toContain(`must be at most ${MAX_RULE_ID_CHARS} characters: an approver sends it back as rule_id`);
    const longest = 'r'.repeat(MAX_RULE_ID_CHARS);
    expect(validatePolicy(policy(rule({ id: longest, decision: 'require_approval' }))).rules[0]?.id).toBe(longest);
  });

  it('lists every problem of every rule in one line (P92)', () => {
    const msg = loadError(
      policy(
        rule({ id: 'a', match: { tenants: ['Acme'], topics: ['Job.admin.>', 'job.ok'] } }),
        rule({ id: 'b', decision: 'allow_with_constraints', constraints: { max_retries: 0, max_concurrent_jobs: 3e9 } }),
      ),
    );
    expect(msg.split('; ').map((l) => /^rule '\w' \(rules\[\d\]\): [\w.[\]]+:/.exec(l)?.[0])).toEqual([
      "rule 'a' (rules[0]): match.tenants[0]:",
      "rule 'a' (rules[0]): match.topics[0]:",
      "rule 'b' (rules[1]): constraints.max_retries:",
      "rule 'b' (rules[1]): constraints.max_concurrent_jobs:",
    ]);
  });
});

describe('where a policy is written and where a stored section is loaded', () => {
  const bundle = (r: Record<string, unknown>): unknown => ({ bundles: { ops: { rules: [r] } } });
  const cases: [string, Record<string, unknown>, string][] = [
    ['int32', { id: 'gpu', decision: 'allow_with_constraints', constraints: { max_concurrent_jobs: 3_000_000_000 } }, 'constraints.max_concurrent_jobs: must be a whole number from 1 to 2147483647'],
    ['no retries', { id: 'pay', decision: 'allow_with_constraints', constraints: { max_retries: 0 } }, 'constraints.max_retries: must be a whole number from 1 to 2147483647, got 0'],
    ['tenant', { id: 'deny-acme', decision: 'deny', match: { tenants: ['Acme'] } }, 'match.tenants[0]: tenant "Acme" can never match'],
    ['topic', { id: 'deny-admin', decision: 'deny', match: { topics: ['admin.>'] } }, 'match.topics[0]: topic pattern "admin.>" can never match'],
  ];

  it.each(cases)('PUT /config (validateConfig) refuses it on data.safety: %s', (_name, r, want) => {
    const errors = validateConfig({ safety: bundle(r) });
    expect(errors).toHaveLength(1);
    expect(errors[0]?.path).toBe('safety');
    expect(errors[0]?.message).toContain(`safety.bundles.ops: rule '${String(r['id'])}' (rules[0]): ${want}`);
  });

  it.each(cases)('a stored section does not load either (the kernel reports it): %s', (_name, r, want) => {
    expect(() => parseSafetySection(bundle(r))).toThrow(want);
  });
});
