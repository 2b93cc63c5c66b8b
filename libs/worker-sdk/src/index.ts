export { createWorker, DEFAULT_START_ACK_DELAY_MS, MAX_HEARTBEAT_INTERVAL_MS } from './worker';
export { connectWorkerRuntime, type WorkerRuntime, type WorkerRuntimeOptions } from './runtime';
export { WorkerError, type WorkerErrorCode } from './errors';
export { workerKeys, pointerKey, directSubject } from './keys';
export { SDK_VERSION, resultMsgId } from './packets';
export type { JobContext, JobHandler, JobOutcome, JobOutcomeStatus, Worker, WorkerBus, WorkerOptions, WorkerStats } from './types';
