import type { z } from 'zod';
import { PolicyLoadError } from './errors';
import { policySchema, type Policy } from './model';
import { walkJson, type JsonPath } from '../walk-json';

// Policy validation shared by the safety kernel (its policy file and the `safety` config
// section) and every config writer (validateConfig), so a policy the kernel would refuse is
// refused where it is written (decisions.md P44).

type Path = readonly PropertyKey[];

function valueAt(root: unknown, path: Path): unknown {
  let cur = root;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function fieldPath(path: Path): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '');
}

/** Where `path` is, named for an operator: the rule by id (what they search the file for) and the field inside it. */
function locate(raw: unknown, path: Path): { where: string; field: Path } {
  if (path[0] === 'rules' && typeof path[1] === 'number') {
    const id = valueAt(raw, ['rules', path[1], 'id']);
    return { where: `rule '${typeof id === 'string' ? id : `#${path[1]}`}' (rules[${path[1]}])`, field: path.slice(2) };
  }
  return { where: 'policy', field: path };
}

/**
 * The path of an own `__proto__` key anywhere in `v`, or null. YAML and JSON.parse keep one as an
 * own key, and zod's records drop it without a word: `match: {labels: {__proto__: x}}` loaded as
 * `labels: {}`, a rule that matched every job (P174). The config writers refuse it too.
 */
function protoKeyPath(raw: unknown): JsonPath | null {
  let found: JsonPath | null = null;
  walkJson(raw, {
    key: (k, path) => {
      if (k === '__proto__') found ??= [...path, k];
      return found === null;
    },
  });
  return found;
}

function describeIssue(raw: unknown, issue: z.core.$ZodIssue): string {
  const path = issue.path;
  const { where, field } = locate(raw, path);
  if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `${where}: ${fieldPath([...field, k])}: unknown key`).join('; ');
  let what = issue.message;
  if (issue.code === 'invalid_value') {
    const name = field[field.length - 1] === 'decision' ? 'decision' : 'value';
    const got = valueAt(raw, path);
    const expected = issue.values.map(String).join('|');
    what = got === undefined ? `required (one of ${expected})` : `unknown ${name} ${JSON.stringify(got)} (expected ${expected})`;
  } else if (issue.code === 'invalid_type' && valueAt(raw, path) === undefined) {
    what = `required (${issue.expected})`;
  }
  return `${where}: ${fieldPath(field) || '(root)'}: ${what}`;
}

/** Validates an already-parsed document (YAML or JSON object). Throws PolicyLoadError. */
export function validatePolicy(raw: unknown): Policy {
  const proto = protoKeyPath(raw);
  if (proto) {
    const { where, field } = locate(raw, proto);
    throw new PolicyLoadError(`${where}: ${fieldPath(field)}: key __proto__ is not allowed`);
  }
  const res = policySchema.safeParse(raw);
  if (!res.success) {
    // Every problem, not the first and a count: a policy is fixed in one pass.
    const msg = res.error.issues.length > 0 ? res.error.issues.map((i) => describeIssue(raw, i)).join('; ') : 'invalid policy';
    throw new PolicyLoadError(msg, { cause: res.error });
  }
  const seen = new Map<string, number>();
  res.data.rules.forEach((r, i) => {
    const prev = seen.get(r.id);
    if (prev !== undefined) throw new PolicyLoadError(`rule '${r.id}' (rules[${i}]): id: duplicate rule id (first at rules[${prev}])`);
    seen.set(r.id, i);
  });
  return res.data;
}
