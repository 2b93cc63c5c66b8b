/** Thrown by callers that need a lock and cannot wait longer (e.g. gateway → 409 job_busy, D5). */
export class LockBusyError extends Error {
  override readonly name = 'LockBusyError';
  readonly code = 'lock_busy' as const;
  constructor(
    readonly key: string,
    readonly waitedMs: number,
  ) {
    super(`lock ${key} busy after ${Math.round(waitedMs)} ms`);
  }
}
