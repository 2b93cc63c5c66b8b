/** Stable error codes of @cordum/worker-sdk; match on `code`, not on the class. */
export type WorkerErrorCode = 'worker_stopped' | 'worker_invalid_options' | 'worker_state' | 'job_cancelled';

export class WorkerError extends Error {
  readonly code: WorkerErrorCode;
  constructor(code: WorkerErrorCode, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'WorkerError';
    this.code = code;
  }
}
