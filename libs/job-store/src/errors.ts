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
