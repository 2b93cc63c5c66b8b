import { clone, create, fromBinary } from '@bufbuild/protobuf';
import type { DescField, DescMessage } from '@bufbuild/protobuf';
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

type AnyRecord = Record<string, unknown>;

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

type MapField = Extract<DescField, { fieldKind: 'map' }>;

/** Per message type: its fields that are maps or can hold one (directly or through nested messages). */
const mapPaths = new WeakMap<DescMessage, readonly DescField[]>();

function nestedType(f: DescField): DescMessage | undefined {
  if (f.fieldKind === 'message') return f.message;
  if (f.fieldKind === 'list' && f.listKind === 'message') return f.message;
  return undefined;
}

/**
 * Fills `mapPaths` for `root` and every message type reachable from it: a fixpoint over the
 * type graph, so recursive types (Struct ↔ Value ↔ ListValue) get every path to a map.
 */
function computeMapPaths(root: DescMessage): void {
  const types: DescMessage[] = [root];
  const seen = new Set<DescMessage>(types);
  for (let i = 0; i < types.length; i++) {
    for (const f of (types[i] as DescMessage).fields) {
      const n = nestedType(f);
      if (n && !seen.has(n) && !mapPaths.has(n)) {
        seen.add(n);
        types.push(n);
      }
    }
  }
  const reaches = new Set<DescMessage>();
  const holdsMap = (f: DescField): boolean => {
    const n = nestedType(f);
    return f.fieldKind === 'map' || (n !== undefined && (reaches.has(n) || (mapPaths.get(n)?.length ?? 0) > 0));
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const t of types) {
      if (!reaches.has(t) && t.fields.some(holdsMap)) {
        reaches.add(t);
        changed = true;
      }
    }
  }
  for (const t of types) mapPaths.set(t, t.fields.filter(holdsMap));
}

function mapFieldsOf(desc: DescMessage): readonly DescField[] {
  let fields = mapPaths.get(desc);
  if (!fields) {
    computeMapPaths(desc);
    fields = mapPaths.get(desc) ?? [];
  }
  return fields;
}

/**
 * Calls `fn` on every map field of `msg`, recursively (a map's message values after the map
 * itself, list items, nested and oneof messages); stops and returns false as soon as `fn` does.
 * Visits only the fields that can hold a map (computed once per message type), so a packet
 * without maps costs a few property reads.
 */
function everyMap(desc: DescMessage, msg: AnyRecord, fn: (field: MapField, owner: AnyRecord) => boolean): boolean {
  for (const field of mapFieldsOf(desc)) {
    switch (field.fieldKind) {
      case 'map': {
        if (!msg[field.localName]) break;
        if (!fn(field, msg)) return false;
        if (field.mapKind !== 'message') break;
        for (const value of Object.values(msg[field.localName] as AnyRecord)) {
          if (value && !everyMap(field.message, value as AnyRecord, fn)) return false;
        }
        break;
      }
      case 'list': {
        if (field.listKind !== 'message') break;
        for (const item of (msg[field.localName] as AnyRecord[] | undefined) ?? []) {
          if (!everyMap(field.message, item, fn)) return false;
        }
        break;
      }
      case 'message': {
        let value: AnyRecord | undefined;
        if (field.oneof) {
          const oneof = msg[field.oneof.localName] as { case?: string; value?: AnyRecord } | undefined;
          value = oneof?.case === field.localName ? oneof.value : undefined;
        } else {
          value = msg[field.localName] as AnyRecord | undefined;
        }
        if (value && !everyMap(field.message, value, fn)) return false;
        break;
      }
      case 'enum':
      case 'scalar':
        break;
    }
  }
  return true;
}

/**
 * Rebuilds every map of `msg` (recursively) with its keys inserted in sorted
 * order, because protobuf-es writes map entries in object key order. Note that
 * JS objects always enumerate integer-like keys ("7", "42") first in numeric
 * order; the result is still a pure function of the key set, which is all the
 * signer needs (verifiers hash the received bytes, never a re-encoding).
 */
export function sortMapsInPlace(desc: DescMessage, msg: AnyRecord): void {
  everyMap(desc, msg, (field, owner) => {
    const rec = owner[field.localName] as AnyRecord;
    const sorted: AnyRecord = {};
    for (const key of Object.keys(rec).sort(compareKeys)) sorted[key] = rec[key];
    owner[field.localName] = sorted;
    return true;
  });
}

/**
 * True when every map already enumerates its keys in sorted order, so that
 * `sortMapsInPlace` would change nothing (a sufficient test: a map whose
 * integer-like keys break string order is sent through the copy anyway).
 */
export function mapsSorted(desc: DescMessage, msg: AnyRecord): boolean {
  return everyMap(desc, msg, (field, owner) => {
    const keys = Object.keys(owner[field.localName] as AnyRecord);
    return keys.every((key, i) => i === 0 || compareKeys(keys[i - 1] ?? '', key) <= 0);
  });
}

/** A deep copy of `msg` whose maps are key-sorted; the input is not touched. */
export function canonicalCopy<T extends BusPacket>(msg: T): T {
  const copy = clone(BusPacketSchema, msg) as T;
  sortMapsInPlace(BusPacketSchema, copy as unknown as AnyRecord);
  return copy;
}

/**
 * Deterministic encoding: ascending field numbers (protobuf-es writes fields
 * sorted by number), maps sorted by key, unknown fields last. A packet whose
 * maps are already in order (most are: empty or built sorted) is encoded as it
 * is; only the others pay for a sorted deep copy. The bytes are `toBinary`'s,
 * written by `encodeMessage` into a shared slab: a view that is never written again.
 */
export function encodePacket(p: BusPacket): Uint8Array {
  return encodeMessage(BusPacketSchema, mapsSorted(BusPacketSchema, p as unknown as AnyRecord) ? p : canonicalCopy(p));
}

/** Encoding used as signing input (D42): deterministic, without field 14. */
export function encodeForSigning(p: BusPacket): Uint8Array {
  const copy = canonicalCopy(p);
  copy.signature = new Uint8Array(0);
  return encodeMessage(BusPacketSchema, copy);
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
