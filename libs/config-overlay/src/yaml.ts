import { parseDocument } from 'yaml';

/**
 * YAML text to a plain value, with the parser's warnings taken as errors: `yaml` prints a warning
 * (an unresolved tag such as `!!js/function`, which it then reads as a plain string) as raw
 * multi-line text on stderr, beside the services' JSON log, and goes on. A policy or a config file
 * that does not mean what it says is refused instead. Throws an Error whose message is the first
 * line of the first error or warning; aliases are bounded by the parser's default
 * (maxAliasCount 100), so an alias bomb is an error too, and so is an alias inside its own
 * anchor's value (P211).
 */
export function parseYamlStrict(text: string): unknown {
  const doc = parseDocument(text, { logLevel: 'silent' });
  const problem = doc.errors[0] ?? doc.warnings[0];
  // The first line ends with a colon that introduced the code excerpt on the lines left out.
  if (problem) throw new Error((problem.message.split('\n')[0] ?? problem.message).replace(/:\s*$/, ''), { cause: problem });
  const value: unknown = doc.toJS();
  assertAcyclic(value);
  return value;
}

/**
 * P211: `a: &a [x, *a]` (or `x: &x {k: *x}`, `x: &x {<<: *x}`) is valid YAML whose value contains
 * itself, and the parser's alias limit does not count it: every walk over it (validation, hashing,
 * JSON) never ends, and the safety kernel simulating such a candidate hung, grew to gigabytes and
 * died out of memory. Refused here, for every policy, config file and candidate. Iterative (no
 * stack limit on deep documents); a shared subtree (an alias used twice, not inside itself) is
 * walked once.
 */
function assertAcyclic(root: unknown): void {
  const onPath = new Set<object>();
  const done = new Set<object>();
  const stack: { node: object; children: unknown[]; next: number }[] = [];
  const enter = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || done.has(v)) return;
    if (onPath.has(v)) throw new Error('an alias refers to its own anchor from inside that anchor\'s value (a recursive structure), which no policy or config can be');
    onPath.add(v);
    stack.push({ node: v, children: Array.isArray(v) ? (v as unknown[]) : Object.values(v), next: 0 });
  };
  enter(root);
  for (let top = stack.at(-1); top !== undefined; top = stack.at(-1)) {
    if (top.next < top.children.length) enter(top.children[top.next++]);
    else {
      stack.pop();
      onPath.delete(top.node);
      done.add(top.node);
    }
  }
}
