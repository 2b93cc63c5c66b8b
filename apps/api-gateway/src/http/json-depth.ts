// How deep a client's JSON may nest. V8 parses JSON without recursion but
// serialises it recursively, so a body of ~200 KB made of 100,000 nested
// arrays parses and then throws RangeError at the first JSON.stringify (the
// job's input, the input-size estimate, a config hash): a 500 for bad input.
// Every JSON a client sends (HTTP bodies, gRPC context_json) is refused past
// this depth with 400 validation_failed instead.

/** Objects and arrays inside one another; the body itself is level 1. */
export const MAX_JSON_DEPTH = 100;

/** True when `value` nests objects/arrays more than `limit` deep; walks without recursion and stops at the first level past it. */
export function jsonTooDeep(value: unknown, limit = MAX_JSON_DEPTH): boolean {
  if (value === null || typeof value !== 'object') return false;
  const stack: Array<[object, number]> = [[value, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [node, depth] = top;
    if (depth > limit) return true;
    for (const child of Array.isArray(node) ? (node as unknown[]) : Object.values(node)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}

export function tooDeepMessage(limit = MAX_JSON_DEPTH): string {
  return `JSON nested deeper than ${limit} levels of objects and arrays`;
}

/**
 * The path of the first number JSON cannot hold (`1e999` parses as Infinity), or null (P215).
 * JSON.stringify writes such a number as `null`, so a job's `context` reached the worker changed
 * and the client was told nothing. Paths as in `details`: `context.a`, `context.list.2`.
 */
export function nonFiniteNumberPath(value: unknown, prefix = ''): string | null {
  // Every submit passes through here: a scan without paths first, the paths only for a body that has one.
  if (!hasNonFiniteNumber(value)) return null;
  const stack: Array<[unknown, string]> = [[value, prefix]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [node, path] = top;
    if (typeof node === 'number' && !Number.isFinite(node)) return path === '' ? '(body)' : path;
    if (node === null || typeof node !== 'object') continue;
    const entries: Array<[string, unknown]> = Array.isArray(node) ? (node as unknown[]).map((v, i) => [String(i), v]) : Object.entries(node);
    for (const [k, v] of entries) stack.push([v, path === '' ? k : `${path}.${k}`]);
  }
  return null;
}

function hasNonFiniteNumber(value: unknown): boolean {
  if (typeof value === 'number') return !Number.isFinite(value);
  if (value === null || typeof value !== 'object') return false;
  // Numbers are looked at in place; only objects and arrays go on the stack.
  const stack: object[] = [value];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    const children: unknown[] = Array.isArray(node) ? (node as unknown[]) : Object.values(node);
    for (const v of children) {
      if (typeof v === 'number') {
        if (!Number.isFinite(v)) return true;
      } else if (v !== null && typeof v === 'object') stack.push(v);
    }
  }
  return false;
}

export const NON_FINITE_MESSAGE = 'a number out of range for JSON (like 1e999) would reach the worker as null';
