import { createHash } from 'node:crypto';
import type { Policy } from '@cordum/config-overlay';

/** JSON with object keys sorted at every level, no whitespace, undefined members dropped. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
  return `{${parts.join(',')}}`;
}

/** Snapshot id: SHA-256 hex of the canonical JSON of the effective policy (D22). */
export function snapshotId(policy: Policy): string {
  return createHash('sha256').update(canonicalJson(policy)).digest('hex');
}
