// What a handler hands the SDK (an error, a result, a progress) turned into what the bus and
// Redis can carry: bounded text, JSON, an integer percent. Nothing here throws.
import { inspect } from 'node:util';

/**
 * Longest error code and message a result carries: the bounds the job store keeps from a packet
 * (job-store MAX_ERROR_CODE_CHARS / MAX_ERROR_MESSAGE_CHARS, decisions.md P73). Anything longer
 * would be cut there anyway; cut here, it can no longer push a JobResult past NATS's max payload.
 */
export const MAX_ERROR_CODE_CHARS = 128;
export const MAX_ERROR_MESSAGE_CHARS = 4_096;
/** Longest progress message sent (the same bound as an error message). */
export const MAX_PROGRESS_MESSAGE_CHARS = 4_096;

/** `s` cut to `n` characters, the last one an ellipsis when cut (as job-store's boundedError). */
export function bounded(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

/** A one-line, bounded rendering of any value for a message (util.inspect never runs toString). */
export function render(v: unknown, max = 1_000): string {
  try {
    return bounded(inspect(v, { depth: 3, breakLength: Infinity, maxArrayLength: 20, maxStringLength: 500, compact: true }), max);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/**
 * The error message for whatever a handler threw or rejected with: an Error's message (its name
 * when the message is empty), a string as is, anything else in a sentence that says what it was
 * (`[object Object]` and `undefined` told the submitter nothing). Bounded by the caller.
 */
export function thrownMessage(err: unknown): string {
  if (err instanceof Error) {
    const message = safeString(() => err.message);
    return message !== '' ? message : `${safeString(() => err.name) || 'Error'} (no message)`;
  }
  if (typeof err === 'string') return err !== '' ? err : 'the handler threw an empty string';
  if (err === undefined || err === null) return `the handler threw ${String(err)} (throw an Error with a message)`;
  return `the handler threw a non-Error value: ${render(err)}`;
}

/**
 * The stack of a thrown Error for a debug line: its name and cut message, then its frames
 * (the stack's own first lines repeat the whole message, which can be megabytes); undefined for
 * anything else.
 */
export function thrownStack(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const stack = safeString(() => err.stack);
  if (stack === '') return undefined;
  const frames = stack.split('\n').filter((l) => /^\s+at /.test(l));
  const head = `${safeString(() => err.name) || 'Error'}: ${bounded(thrownMessage(err), 200)}`;
  return bounded([head, ...frames].join('\n'), MAX_ERROR_MESSAGE_CHARS);
}

function safeString(get: () => unknown): string {
  try {
    const v = get();
    return typeof v === 'string' ? v : '';
  } catch {
    return '';
  }
}

export type Serialised = { ok: true; json: string } | { ok: false; why: string; tooLarge?: true };

/**
 * The result as the JSON stored at `res:<id>`, or why it has none: JSON.stringify throws for a
 * BigInt or a cycle, and answers undefined for a function, a symbol or undefined itself (stored
 * as is, the key held '' and the job read as SUCCEEDED with a null result).
 */
export function serialise(result: unknown): Serialised {
  let json: string | undefined;
  try {
    json = JSON.stringify(result);
  } catch (err) {
    // P337: a result whose JSON is longer than a JavaScript string can be is too large, not unserialisable.
    if (err instanceof RangeError && /Invalid string length/.test(err.message)) return { ok: false, why: 'its JSON is longer than a JavaScript string can hold', tooLarge: true };
    // A cycle's message runs over several lines (the path); the first says what it is.
    const first = thrownMessage(err).split('\n')[0] ?? '';
    return { ok: false, why: bounded(first, 500) };
  }
  if (json === undefined) return { ok: false, why: `JSON has no representation for ${typeof result === 'function' ? 'a function' : render(result, 200)}` };
  return { ok: true, json };
}

/**
 * Null when `s` fits in `limit` bytes of UTF-8, else its size in bytes (a lower bound, its length,
 * when that alone is over: counting a 100 MB string costs half a second). A UTF-16 unit is 1 to
 * 3 bytes, so only a string between limit/3 and limit units is counted.
 */
export function utf8Over(s: string, limit: number): number | null {
  if (s.length > limit) return s.length;
  if (s.length * 3 <= limit) return null;
  const n = Buffer.byteLength(s, 'utf8');
  return n > limit ? n : null;
}

/** A progress as the packet carries it: percent an integer 0-100 (NaN 0), message bounded text. */
export function normaliseProgress(p: unknown): { percent: number; message: string } {
  const o = (typeof p === 'object' && p !== null ? p : {}) as { percent?: unknown; message?: unknown };
  let n = 0;
  try {
    n = o.percent === undefined || o.percent === null ? 0 : Number(o.percent);
  } catch {
    n = 0; // a Symbol, or an object whose valueOf throws
  }
  const percent = Number.isNaN(n) ? 0 : Math.min(100, Math.max(0, Math.round(n)));
  let message = '';
  if (o.message !== undefined && o.message !== null) message = typeof o.message === 'string' ? o.message : render(o.message);
  return { percent, message: bounded(message, MAX_PROGRESS_MESSAGE_CHARS) };
}
