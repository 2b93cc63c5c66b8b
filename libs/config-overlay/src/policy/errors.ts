/** A policy document that cannot be loaded. `message` is one line naming the rule and field. */
export class PolicyLoadError extends Error {
  readonly code = 'policy_invalid';
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'PolicyLoadError';
  }
}
