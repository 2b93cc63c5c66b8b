import { z } from 'zod';
import { JOB_TOPIC_RE, MAX_TOPIC_LENGTH } from '@cordum/protocol';
import type { ConfigFieldError } from './errors';
import { isPlainObject } from './merge';
import { walkJson } from './walk-json';
import { composePolicy, parseSafetySection } from './policy/bundles';
import { PolicyLoadError } from './policy/errors';

// Per-section schemas of cfg:system:default (CONTRACT §6). Objects are loose: a key this version
// does not know is kept and hashed, so a newer gateway can write fields an older replica ignores.

const poolName = z.string().min(1, 'must be a non-empty pool name');

export const poolsSectionSchema = z.looseObject({
  topics: z.record(z.string().min(1), z.array(poolName)).optional(),
  pools: z.record(poolName, z.looseObject({ requires: z.array(z.string()).optional() })).optional(),
});

// Fractions allowed (`scan_interval_seconds: 0.3` keeps test suites fast); 0 or absent = default.
const seconds = z.number('must be a number of seconds').min(0, 'must be >= 0');
/**
 * The scan interval is a timer: Node runs any delay past 2^31-1 ms (24.8 days) after 1 ms, so
 * a huge interval meant a reconciler scanning in a loop. One day is far more than anyone needs.
 */
export const MAX_SCAN_INTERVAL_SECONDS = 86_400;
/**
 * And a floor: `0.001` was a reconciler leader scanning every millisecond (each scan reads the
 * job indexes). 0.1 s still leaves test suites their 0.3 s; 0 keeps meaning "the default".
 * Checked where a value is written (validateConfig: the API, the bootstrap files), not in the
 * section schema that reads a stored document: a value stored before the floor existed is
 * raised to it when applied (timeoutsFromSection), so an upgrade never leaves a replica unable
 * to load its config.
 */
export const MIN_SCAN_INTERVAL_SECONDS = 0.1;

/** Cordum defaults; 0 or absent means "use the default" (as in the Go reconciler). */
export const TIMEOUT_DEFAULTS = { dispatch_timeout_seconds: 120, running_timeout_seconds: 300, scan_interval_seconds: 30 } as const;

export const timeoutsSectionSchema = z.looseObject({
  reconciler: z
    .looseObject({
      dispatch_timeout_seconds: seconds.optional(),
      running_timeout_seconds: seconds.optional(),
      scan_interval_seconds: seconds.max(MAX_SCAN_INTERVAL_SECONDS, `must be at most ${MAX_SCAN_INTERVAL_SECONDS} (one day)`).optional(),
    })
    .optional(),
});

const failMode = z.enum(['open', 'closed']);

export const schedulerSectionSchema = z.looseObject({
  input_fail_mode: failMode.optional(),
  output_fail_mode: failMode.optional(),
  output_policy_enabled: z.boolean().optional(),
});

export const rateLimitsSectionSchema = z.looseObject({
  rps: z.number().positive('must be > 0').optional(),
  burst: z.number().int('must be an integer').positive('must be > 0').optional(),
});

/**
 * What the shared token bucket can run (its Lua sets a PEXPIRE of 2 × burst / rps and answers a
 * retry of 1 / rps; `rps: 1e-300` made every call fail in Redis and pushed every replica onto its
 * in-memory fallback). Checked where a value is written (validateConfig, the gateway's env) and
 * applied as a clamp to a value stored before the bounds (clampRateLimits), like the scan floor.
 */
export const RATE_LIMIT_BOUNDS = { minRps: 0.001, maxRps: 1_000_000, maxBurst: 1_000_000 } as const;

export function clampRateLimits(l: { rps: number; burst: number }): { rps: number; burst: number } {
  const { minRps, maxRps, maxBurst } = RATE_LIMIT_BOUNDS;
  return { rps: Math.min(maxRps, Math.max(minRps, l.rps)), burst: Math.min(maxBurst, Math.max(1, Math.floor(l.burst))) };
}

/**
 * Checked exactly as the safety kernel loads it (parseSafetySection, and rule ids unique across
 * bundles): a section the kernels would refuse is refused where it is written, instead of
 * being stored, applied by the other services and left DRIFTED on every kernel, and dropped by
 * a kernel that restarts (decisions.md P44). Ids that clash with a kernel's policy file can only
 * be seen by that kernel.
 */
export const safetySectionSchema = z.unknown().superRefine((value, ctx) => {
  try {
    composePolicy({ version: 1, default_decision: 'deny', rules: [] }, parseSafetySection(value));
  } catch (err) {
    if (!(err instanceof PolicyLoadError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
  }
});

export const sectionSchemas = {
  pools: poolsSectionSchema,
  timeouts: timeoutsSectionSchema,
  scheduler: schedulerSectionSchema,
  rate_limits: rateLimitsSectionSchema,
  safety: safetySectionSchema,
} as const;

export type KnownSection = keyof typeof sectionSchemas;
export type PoolsSection = z.infer<typeof poolsSectionSchema>;
export type TimeoutsSection = z.infer<typeof timeoutsSectionSchema>;
export type SchedulerSection = z.infer<typeof schedulerSectionSchema>;
export type RateLimitsSection = z.infer<typeof rateLimitsSectionSchema>;
export type SafetySection = z.infer<typeof safetySectionSchema>;

export function isKnownSection(s: string): s is KnownSection {
  return Object.prototype.hasOwnProperty.call(sectionSchemas, s);
}

/**
 * Field-path errors for every known section present in `data`; unknown sections pass. A `null`
 * section is allowed (in a merge patch it means delete).
 */
export function validateConfig(data: unknown): ConfigFieldError[] {
  if (!isPlainObject(data)) return [{ path: '', message: 'config data must be a JSON object' }];
  // P273: an own `__proto__` anywhere (unknownConfigKeys names it too): a section schema's record
  // drops it, so `safety.bundles.__proto__` validated clean and its rules were never applied.
  const errors: ConfigFieldError[] = [...protoKeys(data), ...illFormedStrings(data)];
  for (const [section, value] of Object.entries(data)) {
    if (value === null || value === undefined || !isKnownSection(section)) continue;
    const res = sectionSchemas[section].safeParse(value);
    if (res.success) {
      if (section === 'timeouts') errors.push(...scanIntervalFloor(res.data as TimeoutsSection));
      if (section === 'rate_limits') errors.push(...rateLimitBounds(res.data as RateLimitsSection));
      if (section === 'pools') errors.push(...poolTopicNames(res.data as PoolsSection));
      continue;
    }
    for (const issue of res.error.issues) {
      errors.push({ path: [section, ...issue.path.map(String)].join('.'), message: issue.message });
    }
  }
  return errors;
}

/** RATE_LIMIT_BOUNDS, for writes only (see there). */
function rateLimitBounds(l: RateLimitsSection): ConfigFieldError[] {
  const { minRps, maxRps, maxBurst } = RATE_LIMIT_BOUNDS;
  const out: ConfigFieldError[] = [];
  if (l.rps !== undefined && (l.rps < minRps || l.rps > maxRps)) out.push({ path: 'rate_limits.rps', message: `must be between ${minRps} and ${maxRps}` });
  if (l.burst !== undefined && l.burst > maxBurst) out.push({ path: 'rate_limits.burst', message: `must be at most ${maxBurst}` });
  return out;
}

/**
 * A topic mapped to pools is a job topic (what a submit may name): a key such as `constructor`
 * or `job.a\u0000` could never route a job, so it is a typo to refuse, not to store. For writes
 * only: a stored document with such a key still loads.
 */
function poolTopicNames(p: PoolsSection): ConfigFieldError[] {
  return Object.keys(p.topics ?? {})
    .filter((t) => !LONE_SURROGATE.test(t) && (t.length > MAX_TOPIC_LENGTH || !JOB_TOPIC_RE.test(t)))
    .map((t) => ({ path: `pools.topics.${t}`, message: `topic must match ^job(\\.[A-Za-z0-9_-]+)+$ and be at most ${MAX_TOPIC_LENGTH} characters, e.g. job.echo` }));
}

/** MIN_SCAN_INTERVAL_SECONDS, for writes only (see there). */
function scanIntervalFloor(t: TimeoutsSection): ConfigFieldError[] {
  const v = t.reconciler?.scan_interval_seconds;
  return v !== undefined && v > 0 && v < MIN_SCAN_INTERVAL_SECONDS
    ? [{ path: 'timeouts.reconciler.scan_interval_seconds', message: `must be 0 (the default) or at least ${MIN_SCAN_INTERVAL_SECONDS} (100 ms)` }]
    : [];
}

/**
 * The keys a section may hold, for `unknownConfigKeys`, read off its schema so the two cannot
 * drift: an object's fields; `'*'` = any key (a record: topic or pool names); `null` = a leaf
 * (or a record of leaves), not looked into. `safety` is left to its own parser, which already
 * refuses unknown fields.
 */
type KeyTree = { [key: string]: KeyTree | null };
type SchemaDef = { type: string; shape?: Record<string, z.ZodType>; innerType?: z.ZodType; valueType?: z.ZodType };
function keyTree(schema: z.ZodType): KeyTree | null {
  const def = (schema as unknown as { _zod: { def: SchemaDef } })._zod.def;
  if ((def.type === 'optional' || def.type === 'nullable' || def.type === 'default') && def.innerType) return keyTree(def.innerType);
  if (def.type === 'object' && def.shape) return Object.fromEntries(Object.entries(def.shape).map(([k, v]) => [k, keyTree(v)]));
  if (def.type === 'record' && def.valueType) {
    const value = keyTree(def.valueType);
    return value === null ? null : { '*': value };
  }
  return null;
}
const KNOWN_KEYS: Record<Exclude<KnownSection, 'safety'>, KeyTree | null> = {
  pools: keyTree(poolsSectionSchema),
  timeouts: keyTree(timeoutsSectionSchema),
  scheduler: keyTree(schedulerSectionSchema),
  rate_limits: keyTree(rateLimitsSectionSchema),
};

/**
 * Keys a write names that this version does not know: a section that does not exist (`timeout`)
 * or a field no section has (`dispatch_timout_seconds`). The gateway refuses them (decisions.md
 * P66): stored, they would be ignored by every replica while the operator believes the change
 * is live. Reading stays loose (the section schemas keep unknown keys), so a document a newer
 * gateway wrote still applies on older replicas. A key set to `null` (a merge patch's delete) is
 * allowed, so a stored typo can be deleted; given the `stored` document, an unknown key set to
 * `null` must be there (P212): `{"timeout": null}` for `timeouts`, a reset that deletes nothing,
 * answered 204 while the setting stayed as it was.
 */
export function unknownConfigKeys(data: Record<string, unknown>, stored?: Record<string, unknown>): ConfigFieldError[] {
  const known = Object.keys(sectionSchemas).join(', ');
  const out: ConfigFieldError[] = [];
  const storedAt = (path: string[]): boolean => {
    let v: unknown = stored;
    for (const k of path) {
      if (!isPlainObject(v) || !Object.hasOwn(v, k)) return false;
      v = v[k];
    }
    return true;
  };
  const deletesNothing = (path: string[], takes: string): void => {
    if (stored !== undefined && !storedAt(path)) out.push({ path: path.join('.'), message: `unknown ${path.length === 1 ? 'section' : 'field'} and not stored, so null deletes nothing; ${takes}` });
  };
  const walk = (value: unknown, tree: KeyTree, path: string[]): void => {
    if (!isPlainObject(value)) return; // the section schema reports a wrong type
    for (const [k, v] of Object.entries(value)) {
      if (k === '__proto__') continue; // protoKeys names it
      const sub = Object.hasOwn(tree, k) ? tree[k] : tree['*'];
      const takes = `${path.join('.')} takes ${Object.keys(tree).join(', ')}`;
      if (v === null) {
        if (sub === undefined) deletesNothing([...path, k], takes); // a stored typo can be deleted
        continue;
      }
      if (sub === undefined) out.push({ path: [...path, k].join('.'), message: `unknown field; ${takes}` });
      else if (sub !== null) walk(v, sub, [...path, k]);
    }
  };
  out.push(...protoKeys(data));
  for (const [section, value] of Object.entries(data)) {
    if (section === '__proto__') continue; // protoKeys names it
    if (value === null) {
      if (!isKnownSection(section)) deletesNothing([section], `known sections: ${known}`);
      continue;
    }
    if (!isKnownSection(section)) out.push({ path: section, message: `unknown section; known sections: ${known}` });
    else if (section !== 'safety') {
      const tree = KNOWN_KEYS[section];
      if (tree) walk(value, tree, [section]);
    }
  }
  return out;
}

/**
 * An own `__proto__` key anywhere in the document, deletions and leaves included. JSON.parse makes
 * one an own key, but a merge assigns it as the object's prototype and zod's records skip it, so it
 * was dropped without a word (or, in a merge patch, never reached the section checks): refused.
 */
function protoKeys(data: Record<string, unknown>): ConfigFieldError[] {
  const out: ConfigFieldError[] = [];
  walkJson(data, {
    key: (k, path) => {
      if (k !== '__proto__') return true;
      out.push({ path: [...path, k].join('.'), message: 'key __proto__ is not allowed' });
      return false;
    },
  });
  return out;
}

/**
 * Every check a write through the API gets (`unknownConfigKeys`, then `validateConfig`), for one
 * section given on its own, as a bootstrap file provides it (`pools.yaml` → `pools`). Paths name
 * the section (`pools.topic`). A file is refused on the same terms as a `PUT`: a typo such as
 * `topic:` for `topics:` would otherwise load, merge and route nothing.
 */
export function sectionFileErrors(section: string, value: unknown): ConfigFieldError[] {
  const data = { [section]: value };
  return distinctErrors([...unknownConfigKeys(data), ...validateConfig(data)]);
}

/** The errors once each (unknownConfigKeys and validateConfig both name an own `__proto__`). */
export function distinctErrors(errors: ConfigFieldError[]): ConfigFieldError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.path}\u0000${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * A lone UTF-16 surrogate in any key or string of the document (`"\ud800"`): JSON.parse takes it,
 * but Redis's cjson refuses to decode it, and put-1.lua decodes the stored document on every
 * write, so one such value made every later write of the document fail (config_corrupt).
 */
const LONE_SURROGATE = /\p{Cs}/u;

function illFormedStrings(data: Record<string, unknown>): ConfigFieldError[] {
  const out: ConfigFieldError[] = [];
  const message = 'must be well-formed Unicode (a lone surrogate cannot be stored)';
  walkJson(data, {
    key: (k, path) => {
      if (LONE_SURROGATE.test(k)) out.push({ path: [...path, k].join('.'), message: `key ${message}` });
      return true;
    },
    value: (v, path) => {
      if (typeof v === 'string' && LONE_SURROGATE.test(v)) out.push({ path: path.join('.'), message });
    },
  });
  return out;
}

/**
 * Parses a known section for a setter; throws (so the watcher keeps the previous hash and
 * retries) when the stored value is invalid. Absent → `undefined`.
 */
export function parseSection<S extends KnownSection>(section: S, value: unknown): z.infer<(typeof sectionSchemas)[S]> | undefined {
  if (value === undefined || value === null) return undefined;
  return sectionSchemas[section].parse(value) as z.infer<(typeof sectionSchemas)[S]>;
}

/** Reconciler timeouts in ms with defaults applied (0 or absent → default). */
export function resolveTimeouts(section: TimeoutsSection | undefined): { dispatchTimeoutMs: number; runningTimeoutMs: number; scanIntervalMs: number } {
  const r = section?.reconciler ?? {};
  const pick = (v: number | undefined, d: number): number => (v && v > 0 ? v : d) * 1000;
  return {
    dispatchTimeoutMs: pick(r.dispatch_timeout_seconds, TIMEOUT_DEFAULTS.dispatch_timeout_seconds),
    runningTimeoutMs: pick(r.running_timeout_seconds, TIMEOUT_DEFAULTS.running_timeout_seconds),
    scanIntervalMs: Math.max(pick(r.scan_interval_seconds, TIMEOUT_DEFAULTS.scan_interval_seconds), MIN_SCAN_INTERVAL_SECONDS * 1000),
  };
}
