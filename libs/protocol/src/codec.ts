import { clone, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { randomUUID } from 'node:crypto';
import { BusPacketSchema } from './gen/cordum/agent/v1/buspacket_pb';
import type { BusPacket } from './gen/cordum/agent/v1/buspacket_pb';
import { ProtocolError } from './errors';

/** CAP protocol version spoken by this control plane (CONTRACT §3). */
export const PROTOCOL_VERSION = 1;

type AnyRecord = Record<string, unknown>;

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Rebuilds every map of `msg` (recursively) with its keys inserted in sorted
 * order, because protobuf-es writes map entries in object key order. Note that
 * JS objects always enumerate integer-like keys ("7", "42") first in numeric
 * order; the result is still a pure function of the key set, which is all the
 * signer needs (verifiers hash the received bytes, never a re-encoding).
 */
function sortMapsInPlace(desc: DescMessage, msg: AnyRecord): void {
  for (const field of desc.fields) {
    switch (field.fieldKind) {
      case 'map': {
        const rec = msg[field.localName] as AnyRecord | undefined;
        if (!rec) break;
        const sorted: AnyRecord = {};
        for (const key of Object.keys(rec).sort(compareKeys)) {
          const value = rec[key];
          if (field.mapKind === 'message' && value) sortMapsInPlace(field.message, value as AnyRecord);
          sorted[key] = value;
        }
        msg[field.localName] = sorted;
        break;
      }
      case 'list': {
        if (field.listKind !== 'message') break;
        const list = msg[field.localName] as AnyRecord[] | undefined;
        for (const item of list ?? []) sortMapsInPlace(field.message, item);
        break;
      }
      case 'message': {
        if (field.oneof) {
          const oneof = msg[field.oneof.localName] as { case?: string; value?: AnyRecord } | undefined;
          if (oneof?.case === field.localName && oneof.value) sortMapsInPlace(field.message, oneof.value);
        } else {
          const value = msg[field.localName] as AnyRecord | undefined;
          if (value) sortMapsInPlace(field.message, value);
        }
        break;
      }
      case 'enum':
      case 'scalar':
        break;
    }
  }
}

/** A deep copy of `msg` whose maps are key-sorted; the input is not touched. */
export function canonicalCopy<T extends BusPacket>(msg: T): T {
  const copy = clone(BusPacketSchema, msg) as T;
  sortMapsInPlace(BusPacketSchema, copy as unknown as AnyRecord);
  return copy;
}

/**
 * Deterministic encoding: ascending field numbers (protobuf-es writes fields
 * sorted by number), maps sorted by key, unknown fields last.
 */
export function encodePacket(p: BusPacket): Uint8Array {
  return toBinary(BusPacketSchema, canonicalCopy(p));
}

/** Encoding used as signing input (D42): deterministic, without field 14. */
export function encodeForSigning(p: BusPacket): Uint8Array {
  const copy = canonicalCopy(p);
  copy.signature = new Uint8Array(0);
  return toBinary(BusPacketSchema, copy);
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
