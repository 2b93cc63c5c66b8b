import { createHash } from 'node:crypto';

/**
 * Canonical JSON: object keys sorted (UTF-16 code units, as RFC 8785), no whitespace, numbers in
 * ECMAScript shortest form (so `1.0`, `1` and `1e0` read from a file hash the same). Strings such
 * as durations ("30s") are kept as written: we hash what the operator wrote, not an
 * interpretation of it. Two replicas with the same data always produce the same bytes, which is
 * what makes hash-gated apply and drift comparison meaningful (seed 001: "weak normalization can
 * produce false positives").
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
      return JSON.stringify(value); // -0 → "0", 1.50 → "1.5"
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
      const rec = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const k of Object.keys(rec).sort()) {
        const v = rec[k];
        if (v === undefined) continue;
        parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
      }
      return `{${parts.join(',')}}`;
    }
    case 'bigint':
    case 'function':
    case 'symbol':
    case 'undefined':
      break;
  }
  throw new TypeError(`canonicalJson: unsupported ${typeof value}`);
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** SHA-256 hex of canonical JSON of any value (bootstrap files use it too). */
export function hashValue(value: unknown): string {
  return sha256Hex(canonicalJson(value));
}

/** D33: SHA-256 hex of canonical JSON of `data[section]`, `null` when the section is absent (or null). */
export function sectionHash(data: Record<string, unknown>, section: string): string | null {
  const v = Object.prototype.hasOwnProperty.call(data, section) ? data[section] : undefined;
  return v === undefined || v === null ? null : hashValue(v);
}

/** Hashes of every section present in `data` (known and unknown sections alike). */
export function sectionHashes(data: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(data).sort()) {
    const h = sectionHash(data, k);
    if (h !== null) out[k] = h;
  }
  return out;
}
