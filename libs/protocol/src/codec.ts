import { create, fromBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { randomUUID } from 'node:crypto';
import { BusPacketSchema } from './gen/cordum/agent/v1/buspacket_pb';
import type { BusPacket } from './gen/cordum/agent/v1/buspacket_pb';
import { encodeMessage } from './binary-encoder';
import { ProtocolError } from './errors';

/** CAP protocol version spoken by this control plane (CONTRACT §3). */
export const PROTOCOL_VERSION = 1;

/**
 * Heartbeat label a worker sets in its last heartbeat when it stops (our convention on CAP's free
 * `labels`): it takes no new work, so schedulers route around it at once instead of until its
 * heartbeats time out. Any later heartbeat without it (the same id restarted) clears it.
 */
export const WORKER_DRAINING_LABEL = 'cordum.draining';

/**
 * Deterministic encoding: ascending field numbers (protobuf-es writes fields
 * sorted by number), map entries in key order (string keys by their UTF-8
 * bytes, as Go's and Python's deterministic marshal write them, whatever order
 * the JS object lists them in), unknown fields last. The bytes are written by
 * `encodeMessage` into a shared slab: a view that is never written again.
 */
export function encodePacket(p: BusPacket): Uint8Array {
  return encodeMessage(BusPacketSchema, p);
}

/**
 * Encoding used as signing input (D42): deterministic, without field 14. The
 * CAP verifiers (Go, Python) re-encode the packet deterministically and check
 * the signature over that, so these bytes must be exactly theirs, map order
 * included. The input is not touched (a shallow copy drops the signature).
 */
export function encodeForSigning(p: BusPacket): Uint8Array {
  return encodeMessage(BusPacketSchema, { ...p, signature: new Uint8Array(0) });
}

export function decodePacket(bytes: Uint8Array): BusPacket {
  try {
    return fromBinary(BusPacketSchema, bytes);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ProtocolError('decode_failed', `cannot decode BusPacket (${bytes.length} bytes): ${reason}`, { cause: err });
  }
}

/**
 * A packet with protocol_version 1 and created_at now. `traceId` defaults to a
 * fresh UUID; pass '' explicitly for trace-less heartbeats.
 */
export function newPacket(senderId: string, payload: BusPacket['payload'], traceId?: string): BusPacket {
  return create(BusPacketSchema, {
    traceId: traceId ?? randomUUID(),
    senderId,
    createdAt: timestampNow(),
    protocolVersion: PROTOCOL_VERSION,
    payload,
  });
}
