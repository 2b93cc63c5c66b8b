// Opaque cursors over score-ordered ZSET indexes (D16). A cursor is the
// position (score, member) of the last index entry a page *scanned*, so the
// next page resumes after it even when a filter dropped that entry.
import { ApiError } from '../http/errors';

export interface Position {
  score: number;
  id: string;
}

export function encodeCursor(p: Position): string {
  return Buffer.from(JSON.stringify({ s: p.score, i: p.id }), 'utf8').toString('base64url');
}

/** Any cursor we did not issue is a 400 validation error, never a 5xx. */
export function decodeCursor(raw: string | undefined): Position | null {
  if (raw === undefined || raw === '') return null;
  const bad = () => new ApiError('validation_failed', { details: [{ path: 'cursor', message: 'not a cursor issued by this API' }] });
  if (raw.length > 512 || !/^[A-Za-z0-9_-]+$/.test(raw)) throw bad();
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const o = v as { s?: unknown; i?: unknown } | null;
  if (typeof o !== 'object' || o === null || typeof o.s !== 'number' || !Number.isFinite(o.s) || typeof o.i !== 'string' || o.i.length > 256) throw bad();
  return { score: o.s, id: o.i };
}
