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
