// Negative Lua return codes mapped to named reasons in ONE place (STYLE 5).

export type TransitionFailure = 'not_found' | 'illegal_transition' | 'fenced' | 'state_mismatch';

export const LUA_CODES: Readonly<Record<number, TransitionFailure>> = {
  [-1]: 'not_found',
  [-2]: 'fenced',
  [-3]: 'illegal_transition',
  [-4]: 'state_mismatch',
};

export function failureFromCode(code: number): TransitionFailure {
  const reason = LUA_CODES[code];
  if (!reason) throw new JobStoreError('unexpected_reply', `unexpected job-store script code ${code}`);
  return reason;
}

export class JobStoreError extends Error {
  readonly code: string;
  constructor(code: string, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'JobStoreError';
    this.code = code;
  }
}

/** Errors thrown after a state change was written (P258): the change happened, a follow-up write failed. */
const afterCommit = new WeakSet<object>();

/** Marks `err`, thrown by a write that follows a committed transition, and returns it. */
export function markCommitted(err: unknown): unknown {
  if (typeof err === 'object' && err !== null) afterCommit.add(err);
  return err;
}

/**
 * True when `err` came after the transition it followed had committed (its index moves or DLQ
 * entry failed): a caller must not answer that nothing happened.
 */
export function committedBeforeError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && afterCommit.has(err);
}
