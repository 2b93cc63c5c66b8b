// Record ⇄ Redis hash. Each top-level field is its own hash field holding JSON,
// except `state`, stored raw so the Lua scripts can compare it without cjson
// (cjson turns empty objects into arrays, so scripts never decode whole records).
import { JobStoreError } from './errors';
import { isJobState } from './states';
import type { JobPatch, JobRecord } from './types';

export function encodeFields(rec: Partial<JobRecord>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(rec)) {
    if (v === undefined) continue;
    out[k] = k === 'state' ? String(v) : JSON.stringify(v);
  }
  return out;
}

export function encodePatch(patch: JobPatch): string {
  return JSON.stringify(encodeFields(patch as Partial<JobRecord>));
}

/** Encoded fields as the flat [field, value, ...] argument list the scripts take (HSET order). */
export function flatFields(fields: Record<string, string>): string[] {
  const out: string[] = [];
  for (const k in fields) out.push(k, fields[k] as string);
  return out;
}

/** Encoded fields back to values, exactly as decodeHash reads them from Redis. */
export function decodeFields(fields: Record<string, string>): JobRecord {
  const out: Record<string, unknown> = {};
  for (const k in fields) {
    const v = fields[k] as string;
    if (v === 'null') continue; // a cleared field (JobPatch), as decodeHash
    out[k] = k === 'state' ? v : (JSON.parse(v) as unknown);
  }
  return out as unknown as JobRecord;
}

/** `cur` with encoded fields written over it, as the hash stands after an HSET of them (a cleared field goes). */
export function withFields(cur: JobRecord, fields: Record<string, string>): JobRecord {
  const out: Record<string, unknown> = { ...cur, ...decodeFields(fields) };
  for (const k in fields) if (fields[k] === 'null') delete out[k];
  return out as unknown as JobRecord;
}

/** Flat [field, value, ...] reply of HGETALL (from Lua) → record. Fails closed on corrupt data. */
export function decodeFlat(flat: unknown): JobRecord | null {
  if (!Array.isArray(flat) || flat.length === 0) return null;
  const obj: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) obj[String(flat[i])] = String(flat[i + 1]);
  return decodeHash(obj);
}

export function decodeHash(h: Record<string, string>): JobRecord | null {
  if (Object.keys(h).length === 0) return null;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) {
    if (k === 'state') {
      out[k] = v;
      continue;
    }
    // A field a patch cleared (JobPatch's null): absent, as it was before it was first written.
    if (v === 'null') continue;
    try {
      out[k] = JSON.parse(v);
    } catch (err) {
      throw new JobStoreError('corrupt_record', `job record field ${k} is not JSON`, { cause: err });
    }
  }
  if (typeof out['id'] !== 'string' || typeof out['state'] !== 'string' || !isJobState(out['state'])) {
    throw new JobStoreError('corrupt_record', 'job record lacks id or a valid state');
  }
  return out as unknown as JobRecord;
}
