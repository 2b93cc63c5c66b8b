import { createHash } from 'node:crypto';
import { ConfigOverlayError } from './errors';

/**
 * How deep a config value may nest (objects and arrays inside one another; the value itself is
 * level 1). Redis's cjson decodes no deeper, so put-1.lua already refused every write of a deeper
 * document; the store refuses to read one (config_corrupt), and nothing here recurses further:
 * a hand-stored document 100,000 levels deep made every hash throw RangeError.
 */
export const MAX_CONFIG_DEPTH = 1_000;

/**
 * A value that has no JSON form: a non-finite number (JSON.parse reads `1e999`, valid JSON, as
 * Infinity), nesting past MAX_CONFIG_DEPTH, or a type JSON does not have. `path` locates it.
 */
export class NotJsonError extends TypeError {
  /** The path as text (`rate_limits.burst`), shortened past a dozen levels. */
  readonly where: string;
  constructor(
    readonly path: readonly string[],
    readonly reason: string,
  ) {
    super(`${pathText(path)} ${reason}`);
    this.name = 'NotJsonError';
    this.where = pathText(path);
  }
}

/** `a.b.0.c`; a path past a dozen levels keeps its first eight and says how many follow. */
function pathText(path: readonly string[]): string {
  if (path.length === 0) return '(the value)';
  if (path.length <= 12) return path.join('.');
  return `${path.slice(0, 8).join('.')}.… (${path.length} levels)`;
}

function nonFinite(path: readonly string[], n: number): NotJsonError {
  return new NotJsonError(
    path,
    Number.isNaN(n) ? 'is NaN, not a finite number' : `is ${n}, not a finite number (JSON.parse reads a literal past ±1.8e308, such as 1e999, as ${n})`,
  );
}

const tooDeep = (path: readonly string[]): NotJsonError => new NotJsonError(path, `nests deeper than ${MAX_CONFIG_DEPTH} levels of objects and arrays`);

/**
 * Canonical JSON: object keys sorted (UTF-16 code units, as RFC 8785), no whitespace, numbers in
 * ECMAScript shortest form (so `1.0`, `1` and `1e0` read from a file hash the same). Strings such
 * as durations ("30s") are kept as written: we hash what the operator wrote, not an
 * interpretation of it. Two replicas with the same data always produce the same bytes, which is
 * what makes hash-gated apply and drift comparison meaningful (seed 001: "weak normalization can
 * produce false positives"). A value with no JSON form throws NotJsonError naming where it is.
 */
export function canonicalJson(value: unknown): string {
  return canonical(value, [], 1);
}

function canonical(value: unknown, path: string[], depth: number): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw nonFinite(path, value);
      return JSON.stringify(value); // -0 → "0", 1.50 → "1.5"
    case 'object': {
      if (depth > MAX_CONFIG_DEPTH) throw tooDeep(path);
      const parts: string[] = [];
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i];
          path.push(String(i));
          parts.push(canonical(v === undefined ? null : v, path, depth + 1));
          path.pop();
        }
        return `[${parts.join(',')}]`;
      }
      const rec = value as Record<string, unknown>;
      for (const k of Object.keys(rec).sort()) {
        const v = rec[k];
        if (v === undefined) continue;
        path.push(k);
        parts.push(`${JSON.stringify(k)}:${canonical(v, path, depth + 1)}`);
        path.pop();
      }
      return `{${parts.join(',')}}`;
    }
    case 'bigint':
    case 'function':
    case 'symbol':
    case 'undefined':
      break;
  }
  throw new NotJsonError(path, `is a ${typeof value}, which JSON does not have`);
}

/**
 * The first place in `value` (walked without recursion) that has no JSON form: nesting past
 * `maxDepth`, and with `finite` a non-finite number. Null when there is none.
 */
export function findNotJson(value: unknown, o: { finite: boolean; maxDepth?: number; path?: readonly string[] }): NotJsonError | null {
  const maxDepth = o.maxDepth ?? MAX_CONFIG_DEPTH;
  // Parent links instead of a path per entry: a path is built only for the one node reported.
  interface Entry {
    value: unknown;
    depth: number;
    key: string;
    parent: Entry | null;
  }
  const pathOf = (e: Entry): string[] => {
    const out: string[] = [];
    for (let p: Entry | null = e; p !== null && p.parent !== null; p = p.parent) out.push(p.key);
    return [...(o.path ?? []), ...out.reverse()];
  };
  const stack: Entry[] = [{ value, depth: 1, key: '', parent: null }];
  for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
    const v = e.value;
    if (typeof v === 'number') {
      if (o.finite && !Number.isFinite(v)) return nonFinite(pathOf(e), v);
    } else if (typeof v === 'object' && v !== null) {
      if (e.depth > maxDepth) return tooDeep(pathOf(e));
      const entries: [string, unknown][] = Array.isArray(v) ? v.map((c: unknown, i) => [String(i), c]) : Object.entries(v);
      // Reversed onto the stack, so the first problem in document order is the one reported.
      for (const [key, child] of entries.reverse()) stack.push({ value: child, depth: e.depth + 1, key, parent: e });
    }
  }
  return null;
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** SHA-256 hex of canonical JSON of any value (bootstrap files use it too). */
export function hashValue(value: unknown): string {
  return sha256Hex(canonicalJson(value));
}

/**
 * D33: SHA-256 hex of canonical JSON of `data[section]`, `null` when the section is absent (or
 * null). A stored section with no canonical form (a hand edit holding `1e999`, which JSON.parse
 * reads as Infinity) is config_corrupt naming the section and the field: the watcher refuses that
 * section alone, keeping what it applied, and the status view marks it.
 */
export function sectionHash(data: Record<string, unknown>, section: string): string | null {
  const v = Object.prototype.hasOwnProperty.call(data, section) ? data[section] : undefined;
  if (v === undefined || v === null) return null;
  try {
    return sha256Hex(canonical(v, [section], 1));
  } catch (err) {
    if (err instanceof NotJsonError) throw new ConfigOverlayError('config_corrupt', `stored section ${section} is unreadable: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Hashes of every section present in `data` (known and unknown sections alike); throws as sectionHash. */
export function sectionHashes(data: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(data).sort()) {
    const h = sectionHash(data, k);
    if (h !== null) out[k] = h;
  }
  return out;
}
