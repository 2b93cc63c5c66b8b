/**
 * Stable error codes of @cordum/protocol. Callers match on `code`, never on
 * the message or the class identity, because bundling can duplicate classes.
 */
export type ProtocolErrorCode =
  | 'decode_failed'
  | 'invalid_packet'
  | 'malformed_wire'
  | 'invalid_key'
  | 'invalid_address'
  | 'invalid_signature';

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;

  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

export function isProtocolError(err: unknown, code?: ProtocolErrorCode): err is ProtocolError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  const name = (err as { name?: unknown }).name;
  return name === 'ProtocolError' && typeof c === 'string' && (code === undefined || c === code);
}
