// Submit outcomes that are not a job (transport-neutral: HTTP and, later, gRPC map these codes).
export type SubmitErrorCode =
  | 'idempotency_in_progress'
  | 'policy_throttled'
  | 'redis_unavailable'
  | 'bus_unavailable'
  | 'submit_state_unknown'
  /** The outside claim the create carried (`SubmitCommand.claimKey`) names another job now: nothing was written (P37). */
  | 'claim_lost';

export class SubmitError extends Error {
  readonly code: SubmitErrorCode;
  readonly jobId: string | undefined;
  readonly retryAfterMs: number | undefined;
  constructor(code: SubmitErrorCode, message: string, opts: { jobId?: string; retryAfterMs?: number; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'SubmitError';
    this.code = code;
    this.jobId = opts.jobId;
    this.retryAfterMs = opts.retryAfterMs;
  }
}
