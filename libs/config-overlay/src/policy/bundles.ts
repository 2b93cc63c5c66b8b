import { z } from 'zod';
import { PolicyLoadError } from './errors';
import type { Policy, PolicyRule } from './model';
import { validatePolicy } from './validate';

/** One `safety.bundles.<id>` entry of cfg:system:default, its rules validated like the file's (D22). */
export interface PolicyBundle {
  id: string;
  rules: PolicyRule[];
  /** As written; never used for decisions (see composePolicy), only logged. */
  defaultDecision?: 'allow' | 'deny';
}

// Strict like the policy file: `safety: {bundle: ...}` or a bundle-level `enabled: false` would
// otherwise be ignored, silently leaving out rules the operator meant to add.
const sectionSchema = z.strictObject({
  bundles: z.record(z.string().min(1), z.unknown()).nullish(),
});

const bundleSchema = z.strictObject({
  description: z.string().optional(),
  rules: z.array(z.unknown()).default([]),
  // Accepted and validated, but not used: see composePolicy.
  default_decision: z.enum(['allow', 'deny']).optional(),
});

const FILE = 'the policy file';

const byId = (a: PolicyBundle, b: PolicyBundle): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function issueLine(prefix: string, err: z.ZodError): string {
  const first = err.issues[0];
  if (!first) return `${prefix}: invalid`;
  const where = [prefix, ...first.path.map(String)].join('.');
  if (first.code === 'unrecognized_keys') return `${where}: unknown key ${first.keys.map((k) => `'${k}'`).join(', ')}`;
  return `${where}: ${first.message}`;
}

/**
 * Parses the `safety` config section into bundles sorted by id (code-unit order,
 * so every replica sorts alike whatever its locale). Absent / null → no bundles.
 * Throws PolicyLoadError naming the bundle, the rule and the field.
 */
export function parseSafetySection(value: unknown): PolicyBundle[] {
  if (value === undefined || value === null) return [];
  // P273: zod's record drops an own `__proto__` key (JSON.parse makes one), so a bundle named so
  // vanished here and its rules, a deny among them, were silently not applied.
  const bundles: unknown = typeof value === 'object' ? (value as { bundles?: unknown }).bundles : undefined;
  if (typeof bundles === 'object' && bundles !== null && Object.hasOwn(bundles, '__proto__')) {
    throw new PolicyLoadError('safety.bundles.__proto__: a bundle may not be named __proto__; rename it');
  }
  const section = sectionSchema.safeParse(value);
  if (!section.success) throw new PolicyLoadError(issueLine('safety', section.error), { cause: section.error });
  const out: PolicyBundle[] = [];
  for (const [id, raw] of Object.entries(section.data.bundles ?? {})) {
    const b = bundleSchema.safeParse(raw);
    if (!b.success) throw new PolicyLoadError(issueLine(`safety.bundles.${id}`, b.error), { cause: b.error });
    try {
      // The file's validator gives the same rule/field messages and the duplicate-id check within the bundle.
      const rules = validatePolicy({ version: 1, default_decision: 'deny', rules: b.data.rules }).rules;
      out.push(b.data.default_decision ? { id, rules, defaultDecision: b.data.default_decision } : { id, rules });
    } catch (err) {
      if (err instanceof PolicyLoadError) throw new PolicyLoadError(`safety.bundles.${id}: ${err.message}`, { cause: err });
      throw err;
    }
  }
  return out.sort(byId);
}

/**
 * Effective policy (D22): the file's rules, then each bundle's rules in bundle-id
 * order; `default_decision` is the file's. A bundle's own `default_decision` is
 * ignored: bundles are appended after the file's rules, and a second default can
 * only ever be reached when nothing matched, where the file's default already
 * answers; letting any bundle override it would make one bundle change the
 * outcome of every request the others do not cover. Rule ids must be unique
 * across the file and all bundles (Explain and approvals name rules by id).
 */
export function composePolicy(file: Policy, bundles: readonly PolicyBundle[]): Policy {
  if (bundles.length === 0) return file;
  const origin = new Map<string, string>(file.rules.map((r) => [r.id, FILE]));
  const rules: PolicyRule[] = [...file.rules];
  for (const b of bundles) {
    for (const r of b.rules) {
      const prev = origin.get(r.id);
      if (prev !== undefined) throw new PolicyLoadError(`safety.bundles.${b.id}: rule '${r.id}': id: duplicate rule id (already in ${prev})${prev === FILE ? '; rename the bundle rule' : ''}`);
      origin.set(r.id, `bundle '${b.id}'`);
      rules.push(r);
    }
  }
  return { ...file, rules };
}
