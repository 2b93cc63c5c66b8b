import { snapshotId } from '../src/policy/canonical';
import { composePolicy, parseSafetySection, PolicyLoadError } from '@cordum/config-overlay';
import { parsePolicy } from '../src/policy/parse';

const FILE = parsePolicy(`
version: 1
default_decision: deny
rules:
  - id: file-deny-admin
    match: { topics: ["job.admin.>"] }
    decision: deny
`);

function loadError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyLoadError);
    expect((err as PolicyLoadError).code).toBe('policy_invalid');
    return (err as Error).message;
  }
  throw new Error('expected a PolicyLoadError');
}

describe('parseSafetySection (cfg:system:default data.safety, D22)', () => {
  it('absent, null or empty sections have no bundles', () => {
    expect(parseSafetySection(undefined)).toEqual([]);
    expect(parseSafetySection(null)).toEqual([]);
    expect(parseSafetySection({})).toEqual([]);
    expect(parseSafetySection({ bundles: {} })).toEqual([]);
  });

  it('returns bundles in code-unit id order with rules normalised like the file', () => {
    const b = parseSafetySection({
      bundles: {
        b: { rules: [{ id: 'b1', match: { topics: ['job.b'] }, decision: 'require_human' }] },
        A: { rules: [{ id: 'a1', decision: 'throttle', velocity: { max_requests: 3, window_seconds: 10 } }], default_decision: 'allow' },
        a: { rules: [] },
      },
    });
    expect(b.map((x) => x.id)).toEqual(['A', 'a', 'b']);
    expect(b[0]?.defaultDecision).toBe('allow');
    expect(b[0]?.rules[0]).toMatchObject({ id: 'a1', match: {}, velocity: { key: 'tenant' } });
    expect(b[2]?.rules[0]?.decision).toBe('require_approval');
  });

  it.each([
    [{ bundle: {} }, /^safety: unknown key 'bundle'/],
    [{ bundles: { x: { rules: [], enabled: false } } }, /^safety\.bundles\.x: unknown key 'enabled'/],
    [{ bundles: { x: { rules: 'nope' } } }, /^safety\.bundles\.x\.rules: /],
    [{ bundles: { x: { rules: [], default_decision: 'maybe' } } }, /^safety\.bundles\.x\.default_decision: /],
    [{ bundles: { x: { rules: [{ id: 'r', match: { tenant: ['a'] }, decision: 'allow' }] } } }, /^safety\.bundles\.x: rule 'r' \(rules\[0\]\): match\.tenant: unknown key/],
    [{ bundles: { x: { rules: [{ id: 'r', decision: 'perhaps' }] } } }, /^safety\.bundles\.x: rule 'r' \(rules\[0\]\): decision: unknown decision "perhaps"/],
    [{ bundles: { x: { rules: [{ id: 'r', decision: 'throttle' }] } } }, /^safety\.bundles\.x: rule 'r' \(rules\[0\]\): velocity: required/],
    [{ bundles: { x: { rules: [{ id: 'r', decision: 'allow' }, { id: 'r', decision: 'deny' }] } } }, /^safety\.bundles\.x: rule 'r' \(rules\[1\]\): id: duplicate/],
  ])('rejects %j naming the bundle, rule and field', (section, msg) => {
    expect(loadError(() => parseSafetySection(section))).toMatch(msg);
  });
});

describe('composePolicy', () => {
  it('is the file policy itself without bundles (same snapshot id as before bundles existed)', () => {
    expect(composePolicy(FILE, [])).toBe(FILE);
    expect(snapshotId(composePolicy(FILE, parseSafetySection({ bundles: {} })))).toBe(snapshotId(FILE));
  });

  it("appends bundle rules after the file's, in bundle-id order, keeping the file's default_decision", () => {
    const bundles = parseSafetySection({
      bundles: {
        zeta: { rules: [{ id: 'z1', decision: 'allow' }] },
        alpha: { rules: [{ id: 'a1', decision: 'deny' }, { id: 'a2', decision: 'allow' }], default_decision: 'allow' },
      },
    });
    const p = composePolicy(FILE, bundles);
    expect(p.rules.map((r) => r.id)).toEqual(['file-deny-admin', 'a1', 'a2', 'z1']);
    expect(p.default_decision).toBe('deny');
    // the id depends only on the content: writing the bundles in another order gives the same snapshot
    const reordered = parseSafetySection({
      bundles: {
        alpha: { default_decision: 'allow', rules: [{ decision: 'deny', id: 'a1' }, { id: 'a2', decision: 'allow' }] },
        zeta: { rules: [{ id: 'z1', decision: 'allow' }] },
      },
    });
    expect(snapshotId(composePolicy(FILE, reordered))).toBe(snapshotId(p));
  });

  it('rejects a rule id used by the file or by another bundle', () => {
    const clashFile = parseSafetySection({ bundles: { b: { rules: [{ id: 'file-deny-admin', decision: 'allow' }] } } });
    expect(loadError(() => composePolicy(FILE, clashFile))).toMatch(/^safety\.bundles\.b: rule 'file-deny-admin': id: duplicate rule id \(already in the policy file\)/);
    const clashBundle = parseSafetySection({ bundles: { a: { rules: [{ id: 'x', decision: 'allow' }] }, b: { rules: [{ id: 'x', decision: 'deny' }] } } });
    expect(loadError(() => composePolicy(FILE, clashBundle))).toMatch(/^safety\.bundles\.b: rule 'x': id: duplicate rule id \(already in bundle 'a'\)/);
  });
});
