export { createWorker } from './worker';
export {
  validateWorkerOptions,
  DEFAULT_START_ACK_DELAY_MS,
  MAX_HEARTBEAT_INTERVAL_MS,
  MAX_PARALLEL_JOBS,
  MIN_HEARTBEAT_INTERVAL_MS,
  DEFAULT_CANCEL_GRACE_MS,
  DEFAULT_MAX_RESULT_BYTES,
  DEFAULT_STOP_TIMEOUT_MS,
  MAX_STOP_TIMEOUT_MS,
  STOP_ANSWER_MARGIN_MS,
  workerStopDeadlineMs,
} from './options';
export { connectWorkerRuntime, type WorkerRuntime, type WorkerRuntimeOptions } from './runtime';
export { WorkerError, type WorkerErrorCode } from './errors';
export { workerKeys, pointerKey, directSubject } from './keys';
export { SDK_VERSION, resultMsgId } from './packets';
export type { JobContext, JobHandler, JobOutcome, JobOutcomeStatus, Worker, WorkerBus, WorkerOptions, WorkerStats } from './types';
