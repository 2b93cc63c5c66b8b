import type { ErrorDetail } from './errors';

// How deep a client's JSON may nest. V8 parses JSON without recursion but
// serialises it recursively, so a body of ~200 KB made of 100,000 nested
// arrays parses and then throws RangeError at the first JSON.stringify (the
// job's input, the input-size estimate, a config hash): a 500 for bad input.
// Every JSON a client sends (HTTP bodies, gRPC context_json) is refused past
// this depth with 400 validation_failed instead.

/** Objects and arrays inside one another; the body itself is level 1. */
export const MAX_JSON_DEPTH = 100;

/**
 * One walk for both checks a client's JSON gets: nesting past `limit` ('deep', found at the first
 * level past it), else a number JSON cannot hold ('non_finite', P215). Numbers are looked at in
 * place; only objects and arrays go on the stack.
 */
function scan(value: unknown, limit: number): 'deep' | 'non_finite' | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : 'non_finite';
  if (value === null || typeof value !== 'object') return null;
  let nonFinite = false;
  const stack: Array<[object, number]> = [[value, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [node, depth] = top;
    if (depth > limit) return 'deep';
    for (const v of Array.isArray(node) ? (node as unknown[]) : Object.values(node)) {
      if (typeof v === 'number') nonFinite ||= !Number.isFinite(v);
      else if (v !== null && typeof v === 'object') stack.push([v, depth + 1]);
    }
  }
  return nonFinite ? 'non_finite' : null;
}

/** True when `value` nests objects/arrays more than `limit` deep; walks without recursion and stops at the first level past it. */
export function jsonTooDeep(value: unknown, limit = MAX_JSON_DEPTH): boolean {
  return scan(value, limit) === 'deep';
}

export function tooDeepMessage(limit = MAX_JSON_DEPTH): string {
  return `JSON nested deeper than ${limit} levels of objects and arrays`;
}

/**
 * What is wrong with a client's JSON (an HTTP body, gRPC `context_json`), or null: nested past
 * MAX_JSON_DEPTH (at `at`), else the first number JSON cannot hold (P215: `1e999` parses as
 * Infinity and JSON.stringify writes it as `null`, so the worker got other input than the client
 * sent), at its path under `prefix` (`context.list.2`; `at` for the value itself). One walk for
 * both on every submit; the path is built only for a body that has such a number.
 */
export function clientJsonProblem(value: unknown, at: string, prefix = ''): ErrorDetail | null {
  const problem = scan(value, MAX_JSON_DEPTH);
  if (problem === 'deep') return { path: at, message: tooDeepMessage() };
  if (problem === 'non_finite') return { path: nonFinitePath(value, prefix) || at, message: NON_FINITE_MESSAGE };
  return null;
}

/** The path of the first non-finite number in `value` (one is there), `prefix` for the value itself. */
function nonFinitePath(value: unknown, prefix: string): string {
  const stack: Array<[unknown, string]> = [[value, prefix]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [node, path] = top;
    if (typeof node === 'number' && !Number.isFinite(node)) return path;
    if (node === null || typeof node !== 'object') continue;
    const entries: Array<[string, unknown]> = Array.isArray(node) ? (node as unknown[]).map((v, i) => [String(i), v]) : Object.entries(node);
    for (const [k, v] of entries) stack.push([v, path === '' ? k : `${path}.${k}`]);
  }
  return prefix;
}

const NON_FINITE_MESSAGE = 'a number out of range for JSON (like 1e999) would reach the worker as null';
