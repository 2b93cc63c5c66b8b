// Builders for every packet the worker sends. Field choices follow CONTRACT §3.
import {
  ComponentRole,
  create,
  encodePacket,
  HandshakeSchema,
  HeartbeatSchema,
  JobProgressSchema,
  JobResultSchema,
  JobStatus,
  newPacket,
  timestampFromMs,
  type BusPacket,
  type DispatchIdentity,
} from '@cordum/protocol';
import { normaliseProgress } from './text';

/** `encodePacket`, or a signing encoder (WorkerOptions.signingKey, P61). */
export type Encode = (p: BusPacket) => Uint8Array;

export const SDK_VERSION = 'cordum-ts-worker-sdk/0.1.0';

export function handshakePacket(o: { workerId: string; readyTopics: string[]; sdkVersion: string }, encode: Encode = encodePacket): Uint8Array {
  const handshake = create(HandshakeSchema, {
    componentId: o.workerId,
    role: ComponentRole.WORKER,
    supportedVersions: [1],
    // start_ack lets the scheduler redispatch an unacknowledged attempt (D1 b, BEHAVIOURS §3).
    capabilities: { start_ack: true, cancel: true, progress: true },
    sdkVersion: o.sdkVersion,
    readyTopics: o.readyTopics,
  });
  return encode(newPacket(o.workerId, { case: 'handshake', value: handshake }));
}

export function heartbeatPacket(o: {
  workerId: string;
  pool: string;
  activeJobs: number;
  maxParallelJobs: number;
  cpuLoad: number;
  memoryLoad: number;
  capabilities: string[];
  labels: Record<string, string>;
  /** The packet's created_at (epoch ms); default now. */
  sentAtMs?: number;
}, encode: Encode = encodePacket): Uint8Array {
  const hb = create(HeartbeatSchema, {
    workerId: o.workerId,
    type: 'worker',
    pool: o.pool,
    activeJobs: o.activeJobs,
    maxParallelJobs: o.maxParallelJobs,
    cpuLoad: o.cpuLoad,
    memoryLoad: o.memoryLoad,
    capabilities: o.capabilities,
    labels: o.labels,
  });
  const packet = newPacket(o.workerId, { case: 'heartbeat', value: hb });
  if (o.sentAtMs !== undefined) packet.createdAt = timestampFromMs(o.sentAtMs);
  return encode(packet);
}

export function progressPacket(o: {
  workerId: string;
  traceId: string;
  jobId: string;
  dispatch: DispatchIdentity | undefined;
  percent?: number;
  message?: string;
}, encode: Encode = encodePacket): Uint8Array {
  // JobProgress.percent is an int32: 100 / 3 failed the encoding (and threw into the handler).
  const { percent, message } = normaliseProgress(o);
  const p = create(JobProgressSchema, {
    jobId: o.jobId,
    status: JobStatus.RUNNING,
    percent,
    message,
    dispatch: o.dispatch,
  });
  return encode(newPacket(o.workerId, { case: 'jobProgress', value: p }, o.traceId));
}

export type ResultStatus = 'SUCCEEDED' | 'FAILED' | 'FAILED_RETRYABLE' | 'CANCELLED';

const STATUS: Record<ResultStatus, JobStatus> = {
  SUCCEEDED: JobStatus.SUCCEEDED,
  FAILED: JobStatus.FAILED,
  FAILED_RETRYABLE: JobStatus.FAILED_RETRYABLE,
  CANCELLED: JobStatus.CANCELLED,
};

export function resultPacket(o: {
  workerId: string;
  traceId: string;
  jobId: string;
  status: ResultStatus;
  resultPtr: string;
  executionMs: number;
  errorCode: string;
  errorMessage: string;
  dispatch: DispatchIdentity | undefined;
}, encode: Encode = encodePacket): Uint8Array {
  const r = create(JobResultSchema, {
    jobId: o.jobId,
    status: STATUS[o.status],
    resultPtr: o.resultPtr,
    workerId: o.workerId,
    executionMs: BigInt(Math.max(0, Math.round(o.executionMs))),
    errorCode: o.errorCode,
    errorMessage: o.errorMessage,
    dispatch: o.dispatch,
  });
  return encode(newPacket(o.workerId, { case: 'jobResult', value: r }, o.traceId));
}

/** JetStream msg id of a result (D9): a retried publish of the same dispatch is deduplicated. */
export function resultMsgId(jobId: string, dispatchId: string): string {
  return `sys.job.result:${jobId}:${dispatchId}`;
}
