import { loadConfig } from '@cordum/service-kit';
import { z } from 'zod';
import {
  applyMergePatch,
  clampRateLimits,
  RATE_LIMIT_BOUNDS,
  canonicalJson,
  composePolicy,
  configReloadEnvShape,
  configReloadIntervalMs,
  hashValue,
  fileRuleClashes,
  mergeEffective,
  parseSafetySection,
  parseSection,
  resolveTimeouts,
  sectionFileErrors,
  sectionHash,
  sectionHashes,
  sha256Hex,
  unknownConfigKeys,
  validateConfig,
} from '../src';

describe('canonical JSON and section hashes (D33)', () => {
  it('sorts keys at every depth, drops whitespace and normalizes numbers', () => {
    const a = JSON.parse('{"b": 1.50, "a": {"z": [3, 2, {"y": 1e0, "x": -0}], "c": "30s"}}') as unknown;
    expect(canonicalJson(a)).toBe('{"a":{"c":"30s","z":[3,2,{"x":0,"y":1}]},"b":1.5}');
  });

  it('hash is independent of key order and formatting, and changes with content', () => {
    const x = { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300 } };
    const y = JSON.parse('{ "reconciler" : { "running_timeout_seconds": 300.0, "dispatch_timeout_seconds": 120 } }') as unknown;
    expect(hashValue(x)).toBe(hashValue(y));
    expect(hashValue(x)).toBe(sha256Hex('{"reconciler":{"dispatch_timeout_seconds":120,"running_timeout_seconds":300}}'));
    expect(hashValue(x)).toMatch(/^[0-9a-f]{64}$/);
    expect(hashValue({ reconciler: { dispatch_timeout_seconds: 121, running_timeout_seconds: 300 } })).not.toBe(hashValue(x));
    // array order is content, not formatting
    expect(hashValue({ t: ['a', 'b'] })).not.toBe(hashValue({ t: ['b', 'a'] }));
  });

  it('durations are hashed as written, not interpreted', () => {
    expect(hashValue({ d: '30s' })).not.toBe(hashValue({ d: '30000ms' }));
  });

  it('sectionHash is null for an absent or null section; sectionHashes covers unknown sections', () => {
    const data = { pools: { topics: {} }, custom_thing: [1], gone: null };
    expect(sectionHash(data, 'timeouts')).toBeNull();
    expect(sectionHash(data, 'gone')).toBeNull();
    expect(sectionHash(data, 'pools')).toBe(sha256Hex('{"topics":{}}'));
    expect(Object.keys(sectionHashes(data))).toEqual(['custom_thing', 'pools']);
  });
});

describe('merge patch (RFC 7386) and effective merge (D34)', () => {
  it('null deletes, objects merge recursively, arrays and scalars replace; inputs untouched', () => {
    const target = { scheduler: { input_fail_mode: 'open', output_fail_mode: 'open' }, pools: { topics: { 'job.a': ['x', 'y'] } }, rate_limits: { rps: 5 } };
    const snapshot = JSON.stringify(target);
    const out = applyMergePatch(target, { scheduler: { input_fail_mode: 'closed', output_fail_mode: null }, pools: { topics: { 'job.a': ['z'] } }, rate_limits: null });
    expect(out).toEqual({ scheduler: { input_fail_mode: 'closed' }, pools: { topics: { 'job.a': ['z'] } } });
    expect(JSON.stringify(target)).toBe(snapshot);
  });

  it('a non-object patch replaces; an object patch over a scalar starts from {}', () => {
    expect(applyMergePatch({ a: 1 }, [1, 2])).toEqual([1, 2]);
    expect(applyMergePatch({ a: 'x' }, { a: { b: 1, c: null } })).toEqual({ a: { b: 1 } });
  });

  it('mergeEffective overlays system < org < team < workflow < step', () => {
    const eff = mergeEffective([
      { timeouts: { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300 } }, pools: { topics: { 'job.a': ['p1'] } } },
      { timeouts: { reconciler: { dispatch_timeout_seconds: 60 } } },
      { pools: { topics: { 'job.a': ['p2', 'p3'] } } },
      { timeouts: { reconciler: { running_timeout_seconds: null } } },
    ]);
    expect(eff).toEqual({ timeouts: { reconciler: { dispatch_timeout_seconds: 60 } }, pools: { topics: { 'job.a': ['p2', 'p3'] } } });
  });
});

describe('validateConfig', () => {
  it('returns field paths for bad known sections and ignores unknown sections', () => {
    const errors = validateConfig({
      timeouts: { reconciler: { dispatch_timeout_seconds: 'soon', running_timeout_seconds: 300 } },
      scheduler: { input_fail_mode: 'maybe', output_policy_enabled: true },
      rate_limits: { rps: -1, burst: 2.5 },
      pools: { topics: { 'job.a': 'default' }, pools: { default: { requires: [] } } },
      safety: { bundles: { b1: { rules: 'nope' } } },
      something_new: { anything: true },
    });
    const paths = errors.map((e) => e.path).sort();
    expect(paths).toEqual([
      'pools.topics.job.a',
      'rate_limits.burst',
      'rate_limits.rps',
      'safety',
      'scheduler.input_fail_mode',
      'timeouts.reconciler.dispatch_timeout_seconds',
    ]);
    for (const e of errors) expect(e.message.length).toBeGreaterThan(0);
  });

  it('refuses a lone surrogate in any string or key (Redis cjson cannot decode it: every later write would fail)', () => {
    const errors = validateConfig({ note: 'a\ud800b', pools: { topics: { 'job.\udc00': ['default'] } }, list: ['ok', '\udbff'] });
    expect(errors.map((e) => e.path).sort()).toEqual(['list.1', 'note', 'pools.topics.job.\udc00']);
    expect(validateConfig({ note: 'emoji \ud83d\ude00 is a well-formed pair' })).toEqual([]);
  });

  it('checks the safety section as the kernel loads it, naming bundle, rule and field (P44)', () => {
    const msg = (safety: unknown): string[] => validateConfig({ safety }).map((e) => `${e.path}: ${e.message}`);
    expect(msg({ bundles: { ml: { rules: [{ id: 't', decision: 'throttle' }] } } })).toEqual(["safety: safety.bundles.ml: rule 't' (rules[0]): velocity: required when decision is throttle"]);
    expect(msg({ bundles: { ops: { rules: [{ id: 'd', match: { topics: ['job.>.admin'] }, decision: 'deny' }] } } })[0]).toContain("'>' may only be the last segment");
    expect(msg({ bundles: { ops: { rules: [{ id: 'd', match: { topic: ['job.>'] }, decision: 'deny' }] } } })[0]).toContain('match.topic: unknown key');
    expect(msg({ bundle: {} })[0]).toContain("unknown key 'bundle'");
    const dup = { rules: [{ id: 'same', decision: 'deny' }] };
    expect(msg({ bundles: { a: dup, b: dup } })[0]).toContain("rule 'same': id: duplicate rule id (already in bundle 'a')");
    expect(msg({ bundles: { ops: { rules: [{ id: 'deny-admin', match: { topics: ['job.admin.>'] }, decision: 'deny' }] } } })).toEqual([]);
  });

  it('fileRuleClashes names each bundle rule whose id is a rule of a live kernel\'s policy file, on its id', () => {
    const files = [
      { instance_id: 'sk-1', file_id: 'f1', rule_ids: ['x', 'w'], expires_at: 1 },
      { instance_id: 'sk-2', file_id: 'f2', rule_ids: ['x'], expires_at: 1 },
    ];
    const section = { bundles: { ops: { rules: [{ id: 'y', decision: 'deny' }, { id: 'x', decision: 'deny' }] }, b2: { rules: [{ id: 'w', decision: 'deny' }] } } };
    expect(fileRuleClashes(section, files)).toEqual([
      { path: 'safety.bundles.b2.rules.0.id', message: "rule 'w' is a rule of the safety kernels' policy file (SAFETY_POLICY_PATH of sk-1); rule ids must be unique across the file and the bundles: rename the bundle rule" },
      { path: 'safety.bundles.ops.rules.1.id', message: "rule 'x' is a rule of the safety kernels' policy file (SAFETY_POLICY_PATH of sk-1, sk-2); rule ids must be unique across the file and the bundles: rename the bundle rule" },
    ]);
    // no kernel published, no clash, an absent section, or one validateConfig already refuses
    expect(fileRuleClashes(section, [])).toEqual([]);
    expect(fileRuleClashes({ bundles: { ops: { rules: [{ id: 'y', decision: 'deny' }] } } }, files)).toEqual([]);
    expect(fileRuleClashes(null, files)).toEqual([]);
    expect(fileRuleClashes({ bundles: { ops: { rules: [{ id: 'x', decision: 'throttle' }] } } }, files)).toEqual([]);
    // the kernel's own refusal of such a section names the fix too
    expect(() => composePolicy({ version: 1, default_decision: 'allow', rules: [{ id: 'x', match: {}, decision: 'deny' }] }, parseSafetySection({ bundles: { ops: section.bundles.ops } }))).toThrow(
      "safety.bundles.ops: rule 'x': id: duplicate rule id (already in the policy file); rename the bundle rule",
    );
  });

  it('bounds rate_limits to what the shared bucket can run (rps 1e-300 made every limiter call fail in Redis); a stored value is clamped', () => {
    const rl = (v: object) => validateConfig({ rate_limits: v }).map((e) => `${e.path}: ${e.message}`);
    expect(rl({ rps: 1e-300 })).toEqual(['rate_limits.rps: must be between 0.001 and 1000000']);
    expect(rl({ rps: 1e7 })).toEqual(['rate_limits.rps: must be between 0.001 and 1000000']);
    expect(rl({ burst: 1_000_001 })).toEqual(['rate_limits.burst: must be at most 1000000']);
    for (const ok of [{ rps: 0.001, burst: 1 }, { rps: 1_000_000, burst: 1_000_000 }, { rps: 30, burst: 50 }]) expect(rl(ok)).toEqual([]);
    // Only writes are refused: a stored document still parses, and is run at the nearest bound.
    expect(parseSection('rate_limits', { rps: 1e-300, burst: 5e9 })).toEqual({ rps: 1e-300, burst: 5e9 });
    expect(clampRateLimits({ rps: 1e-300, burst: 5e9 })).toEqual({ rps: RATE_LIMIT_BOUNDS.minRps, burst: RATE_LIMIT_BOUNDS.maxBurst });
    expect(clampRateLimits({ rps: 30, burst: 50 })).toEqual({ rps: 30, burst: 50 });
  });

  it('a topic mapped to pools must be a job topic (constructor or a NUL byte could never route a job); pool names stay free', () => {
    const errors = validateConfig({ pools: { topics: { constructor: ['p'], 'job.a\u0000': ['p'], 'job.ok-1': ['p'], [`job.${'x'.repeat(252)}`]: ['p'] }, pools: { constructor: {} } } });
    expect(errors.map((e) => e.path).sort()).toEqual(['pools.topics.constructor', 'pools.topics.job.a\u0000', `pools.topics.job.${'x'.repeat(252)}`]);
    expect(errors[0]?.message).toContain('e.g. job.echo');
  });

  it('an own __proto__ key anywhere is refused by name (it was dropped silently, and a merge patch lost it before any check)', () => {
    const doc = JSON.parse('{"pools":{"pools":{"__proto__":{"requires":["x"]}}},"rate_limits":{"__proto__":1},"safety":{"bundles":{"b":{"rules":[{"__proto__":{}}]}}}}') as Record<string, unknown>;
    expect(unknownConfigKeys(doc).map((e) => `${e.path}: ${e.message}`).sort()).toEqual([
      'pools.pools.__proto__: key __proto__ is not allowed',
      'rate_limits.__proto__: key __proto__ is not allowed',
      'safety.bundles.b.rules.0.__proto__: key __proto__ is not allowed',
    ]);
    // and a stored one cannot become an object's prototype through a merge
    const merged = applyMergePatch({ a: 1 }, JSON.parse('{"__proto__":{"polluted":true},"b":2}')) as Record<string, unknown>;
    expect(merged).toEqual({ a: 1, b: 2 });
    expect(merged['polluted']).toBeUndefined();
  });

  it('a bundle named __proto__ is refused where the section is validated and where a kernel loads it (P273: its rules vanished, a deny among them)', () => {
    const doc = JSON.parse('{"safety":{"bundles":{"__proto__":{"rules":[{"id":"deny-all","decision":"deny"}]},"ok":{"rules":[]}}}}') as Record<string, unknown>;
    expect(validateConfig(doc)).toEqual([
      { path: 'safety.bundles.__proto__', message: 'key __proto__ is not allowed' },
      { path: 'safety', message: 'safety.bundles.__proto__: a bundle may not be named __proto__; rename it' },
    ]);
    expect(() => parseSafetySection(doc['safety'])).toThrow('safety.bundles.__proto__: a bundle may not be named __proto__; rename it');
    // each named once where both checks run (a bootstrap file)
    expect(sectionFileErrors('safety', doc['safety']).map((e) => e.path)).toEqual(['safety.bundles.__proto__', 'safety']);
  });

  it('caps scan_interval_seconds at one day (a timer past 2^31-1 ms fires after 1 ms)', () => {
    expect(validateConfig({ timeouts: { reconciler: { scan_interval_seconds: 86_401 } } }).map((e) => e.path)).toEqual(['timeouts.reconciler.scan_interval_seconds']);
    expect(validateConfig({ timeouts: { reconciler: { scan_interval_seconds: 86_400 } } })).toEqual([]);
  });

  it('floors scan_interval_seconds at 0.1 (0.001 was a leader scanning every millisecond); 0 still means the default', () => {
    const scan = (v: number) => validateConfig({ timeouts: { reconciler: { scan_interval_seconds: v } } });
    expect(scan(0.001)).toEqual([{ path: 'timeouts.reconciler.scan_interval_seconds', message: 'must be 0 (the default) or at least 0.1 (100 ms)' }]);
    expect(scan(0.099)).toHaveLength(1);
    expect(scan(-1)).toEqual([{ path: 'timeouts.reconciler.scan_interval_seconds', message: 'must be >= 0' }]);
    for (const ok of [0, 0.1, 0.3, 30]) expect(scan(ok)).toEqual([]);
    expect(resolveTimeouts({ reconciler: { scan_interval_seconds: 0 } }).scanIntervalMs).toBe(30_000);
    // Only writes are refused: a document stored before the floor still loads, raised to it.
    const stored = parseSection('timeouts', { reconciler: { scan_interval_seconds: 0.05 } });
    expect(stored?.reconciler?.scan_interval_seconds).toBe(0.05);
    expect(resolveTimeouts(stored).scanIntervalMs).toBe(100);
  });

  it('sectionFileErrors checks one section as a file gives it, with the API\'s unknown-key check first', () => {
    expect(sectionFileErrors('pools', { topic: { 'job.echo': ['default'] } })).toEqual([{ path: 'pools.topic', message: 'unknown field; pools takes topics, pools' }]);
    expect(sectionFileErrors('timeouts', { reconciler: { scan_interval_seconds: 0.001, dispatch_timout_seconds: 1 } }).map((e) => e.path)).toEqual([
      'timeouts.reconciler.dispatch_timout_seconds',
      'timeouts.reconciler.scan_interval_seconds',
    ]);
    expect(sectionFileErrors('pools', { topics: { 'job.echo': ['default'] }, pools: { default: { requires: [] } } })).toEqual([]);
    expect(sectionFileErrors('pools', null)).toEqual([]);
  });

  it('accepts the bootstrap shapes and a null section (delete)', () => {
    expect(
      validateConfig({
        pools: { topics: { 'job.echo': ['default'] }, pools: { default: { requires: [] } } },
        timeouts: { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300, scan_interval_seconds: 30 } },
        scheduler: { input_fail_mode: 'closed', output_fail_mode: 'open', output_policy_enabled: false },
        rate_limits: { rps: 30, burst: 50 },
        safety: { bundles: { main: { rules: [{ id: 'r1', decision: 'deny' }], default_decision: 'allow' } } },
        gone: null,
      }),
    ).toEqual([]);
    expect(validateConfig([])).toEqual([{ path: '', message: 'config data must be a JSON object' }]);
  });

  it('resolveTimeouts applies Cordum defaults for absent or zero values', () => {
    expect(resolveTimeouts(undefined)).toEqual({ dispatchTimeoutMs: 120_000, runningTimeoutMs: 300_000, scanIntervalMs: 30_000 });
    expect(resolveTimeouts({ reconciler: { dispatch_timeout_seconds: 5, scan_interval_seconds: 0 } })).toEqual({
      dispatchTimeoutMs: 5_000,
      runningTimeoutMs: 300_000,
      scanIntervalMs: 30_000,
    });
  });
});

describe('reload interval env fragment (D36)', () => {
  const schema = z.object(configReloadEnvShape);
  it('defaults to 30 s; CORDUM_CONFIG_RELOAD_INTERVAL wins over the SCHEDULER_ alias', () => {
    expect(configReloadIntervalMs(loadConfig(schema, {}))).toBe(30_000);
    expect(configReloadIntervalMs(loadConfig(schema, { SCHEDULER_CONFIG_RELOAD_INTERVAL: '5s' }))).toBe(5_000);
    expect(configReloadIntervalMs(loadConfig(schema, { SCHEDULER_CONFIG_RELOAD_INTERVAL: '5s', CORDUM_CONFIG_RELOAD_INTERVAL: '500ms' }))).toBe(500);
  });
  it('a bad or zero value fails naming the variable', () => {
    expect(() => loadConfig(schema, { CORDUM_CONFIG_RELOAD_INTERVAL: 'soon' })).toThrow(/CORDUM_CONFIG_RELOAD_INTERVAL/);
    expect(() => loadConfig(schema, { SCHEDULER_CONFIG_RELOAD_INTERVAL: '0s' })).toThrow(/SCHEDULER_CONFIG_RELOAD_INTERVAL/);
  });
});

describe('unknownConfigKeys (P66)', () => {
  it('knows every field of the section schemas, and nothing else', () => {
    const everyField = {
      pools: { topics: { 'job.any': ['p1'] }, pools: { p1: { requires: ['gpu'] }, constructor: { requires: [] } } },
      timeouts: { reconciler: { dispatch_timeout_seconds: 1, running_timeout_seconds: 2, scan_interval_seconds: 3 } },
      scheduler: { input_fail_mode: 'open', output_fail_mode: 'closed', output_policy_enabled: false },
      rate_limits: { rps: 1, burst: 2 },
      safety: { anything: 'left to its own parser' },
    };
    expect(unknownConfigKeys(everyField)).toEqual([]);
    const paths = (data: Record<string, unknown>) => unknownConfigKeys(data).map((e) => e.path).sort();
    expect(paths({ pools: { pool: {}, pools: { p1: { require: [] } }, topics: { 'job.x': { deep: 1 } } } })).toEqual(['pools.pool', 'pools.pools.p1.require']);
    expect(paths({ timeouts: { reconciler: { dispatch_timout_seconds: 1 }, reconcile: {} } })).toEqual(['timeouts.reconcile', 'timeouts.reconciler.dispatch_timout_seconds']);
    expect(paths({ scheduler: { input_failmode: 'open' }, rate_limits: { toString: 1 }, ratelimits: {} })).toEqual(['rate_limits.toString', 'ratelimits', 'scheduler.input_failmode']);
    expect(unknownConfigKeys({ timeouts: { reconciler: { dispatch_timout_seconds: null } }, timeout: null })).toEqual([]);
    expect(unknownConfigKeys({ timeouts: { reconcile: 1 } })).toEqual([
      { path: 'timeouts.reconcile', message: 'unknown field; timeouts takes reconciler' },
    ]);
  });
});
