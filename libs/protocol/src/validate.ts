import type { BusPacket } from './gen/cordum/agent/v1/buspacket_pb';
import { PROTOCOL_VERSION, decodePacket } from './codec';
import { ProtocolError } from './errors';

/** Job topics are dotted names under `job.` (CONTRACT §3). */
export const JOB_TOPIC_RE = /^job(\.[A-Za-z0-9_-]+)+$/;
export const MAX_TOPIC_LENGTH = 255;
/**
 * A job id: what the gateway issues (a UUID) and accepts in a path. P302: packets from the bus are
 * held to it too: an id with `{` or `}` changes the hash slot of the keys built from it
 * (`job:meta:{<id>}`), and on a Redis Cluster every script over them failed CROSSSLOT, a
 * redis_error the consumer NAKed through its 20 deliveries (on standalone: an unknown job, acked).
 */
export const JOB_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
/** D26 tenant names: what the gateway admits as a job's tenant, and all a policy rule may name. */
export const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function invalid(p: BusPacket, problem: string): ProtocolError {
  const kind = p.payload.case ?? 'packet';
  const sender = p.senderId ? ` from ${JSON.stringify(p.senderId)}` : '';
  return new ProtocolError('invalid_packet', `invalid ${kind}${sender}: ${problem}`);
}

function checkJobId(p: BusPacket, jobId: string): void {
  if (!jobId) throw invalid(p, 'job_id is empty');
  if (!JOB_ID_RE.test(jobId)) throw invalid(p, `job_id ${JSON.stringify(jobId.slice(0, 140))} does not match ${JOB_ID_RE.source}`);
}

/**
 * The most a job's labels may take, keys and values in UTF-8 (P309). The scheduler sends them
 * twice in a dispatch (`labels` and `meta.labels`): 50 labels of 4,096 characters made a request
 * over NATS's 1 MiB max_payload, which never left (DISPATCHED for good, republished every 5 s).
 */
export const MAX_LABEL_BYTES = 65_536;

/** The UTF-8 size of a label map's keys and values. */
export function labelBytes(labels: Record<string, string> | undefined): number {
  let n = 0;
  if (labels) for (const [k, v] of Object.entries(labels)) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}

function checkLabels(p: BusPacket, where: string, labels: Record<string, string> | undefined): void {
  const n = labelBytes(labels);
  if (n > MAX_LABEL_BYTES) throw invalid(p, `${where} take ${n} bytes (UTF-8 keys and values), more than ${MAX_LABEL_BYTES}`);
}

/**
 * CONTRACT §3 checks on a decoded packet; throws ProtocolError('invalid_packet').
 *
 * Leniency, on purpose and only for heartbeats: old heartbeat senders predate
 * trace ids and some never set protocol_version, so a heartbeat may carry an
 * empty trace_id and protocol_version 0 (proto3 default = "not set"). Every
 * other payload must say version 1 and carry a trace_id, since the scheduler
 * and audit trail correlate by it. Any other version is rejected outright:
 * we cannot know how a future version changed the meaning of fields.
 */
export function validatePacket(p: BusPacket): void {
  const isHeartbeat = p.payload.case === 'heartbeat';
  if (p.protocolVersion !== PROTOCOL_VERSION && !(isHeartbeat && p.protocolVersion === 0)) {
    throw invalid(p, `protocol_version ${p.protocolVersion} not supported (want ${PROTOCOL_VERSION})`);
  }
  if (p.payload.case === undefined) throw invalid(p, 'no payload set');
  if (!isHeartbeat && p.traceId === '') throw invalid(p, 'trace_id is empty');

  switch (p.payload.case) {
    case 'jobRequest': {
      const { jobId, topic } = p.payload.value;
      checkJobId(p, jobId);
      if (topic.length > MAX_TOPIC_LENGTH) throw invalid(p, `topic longer than ${MAX_TOPIC_LENGTH} characters`);
      if (!JOB_TOPIC_RE.test(topic)) throw invalid(p, `topic ${JSON.stringify(topic)} does not match ${JOB_TOPIC_RE.source}`);
      checkLabels(p, 'labels', p.payload.value.labels);
      checkLabels(p, 'meta.labels', p.payload.value.meta?.labels);
      return;
    }
    case 'jobResult':
    case 'jobProgress':
    case 'jobCancel':
      checkJobId(p, p.payload.value.jobId);
      return;
    case 'heartbeat':
      if (!p.payload.value.workerId) throw invalid(p, 'worker_id is empty');
      return;
    case 'handshake':
      if (!p.payload.value.componentId) throw invalid(p, 'component_id is empty');
      return;
    case 'alert':
      return;
  }
}

/**
 * What a consumer of packets from outside the process accepts: `decodePacket`, then
 * `validatePacket` (ProtocolError `decode_failed` or `invalid_packet`). A JetStream consumer
 * treats both alike: counted, terminated after 3 deliveries, never applied.
 */
export function decodeValidPacket(bytes: Uint8Array): BusPacket {
  const p = decodePacket(bytes);
  validatePacket(p);
  return p;
}
