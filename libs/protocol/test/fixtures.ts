import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ScalarType, toBinary, type DescMessage } from '@bufbuild/protobuf';

/** The eight CAP reference vectors (copied from the shared set per D42). */
export const VECTOR_NAMES = [
  'job_request',
  'job_result',
  'job_progress',
  'job_cancel',
  'heartbeat',
  'handshake',
  'alert',
  'alert_enhanced',
] as const;
export type VectorName = (typeof VECTOR_NAMES)[number];

export function readVector(name: VectorName): Uint8Array {
  return new Uint8Array(readFileSync(join(__dirname, 'fixtures', `buspacket_${name}.bin`)));
}

export function readPublicKeyPem(): string {
  return readFileSync(join(__dirname, 'fixtures', 'public_key.pem'), 'utf8');
}

type AnyMessage = Record<string, unknown>;

/**
 * Reference order of map entries in a deterministic encoding (Go's deterministic marshal,
 * Python's deterministic serialization): string keys by their UTF-8 bytes, integer keys by
 * value, false before true. Written plainly, independently of the encoder's comparators.
 */
export function referenceKeyOrder(type: ScalarType): (a: string, b: string) => number {
  if (type === ScalarType.STRING) return (a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  if (type === ScalarType.BOOL) return (a, b) => Number(a === 'true') - Number(b === 'true');
  return (a, b) => {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };
}

/**
 * `msg`, shallow-copied down to its maps, with every map listing its keys in
 * `referenceKeyOrder`. A plain object cannot ("9" always comes before "10"); a
 * Proxy whose ownKeys gives that order can, and toBinary writes map entries in
 * the order Object.keys gives. Well-known types are left as they are (the
 * encoder hands Struct and wrappers to toBinary; Timestamp has no map).
 */
export function inKeyOrder(desc: DescMessage, msg: AnyMessage): AnyMessage {
  if (desc.typeName.startsWith('google.protobuf.')) return msg;
  const out: AnyMessage = { ...msg };
  for (const f of desc.fields) {
    if (f.oneof) {
      const o = msg[f.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (f.fieldKind === 'message' && o?.case === f.localName) out[f.oneof.localName] = { case: o.case, value: inKeyOrder(f.message, o.value as AnyMessage) };
      continue;
    }
    const v = msg[f.localName];
    if (v === undefined || !Object.prototype.hasOwnProperty.call(msg, f.localName)) continue;
    switch (f.fieldKind) {
      case 'message':
        out[f.localName] = inKeyOrder(f.message, v as AnyMessage);
        break;
      case 'list':
        if (f.listKind === 'message') out[f.localName] = (v as AnyMessage[]).map((item) => inKeyOrder(f.message, item));
        break;
      case 'map': {
        const rec = v as AnyMessage;
        const keys = Object.keys(rec).sort(referenceKeyOrder(f.mapKey));
        const target: AnyMessage = {};
        for (const k of keys) target[k] = f.mapKind === 'message' ? inKeyOrder(f.message, rec[k] as AnyMessage) : rec[k];
        out[f.localName] = new Proxy(target, { ownKeys: () => keys });
        break;
      }
      case 'scalar':
      case 'enum':
        break;
    }
  }
  return out;
}

/** The deterministic encoding, by reference: toBinary of `msg` with its maps listed in key order. */
export function toBinaryInKeyOrder(desc: DescMessage, msg: unknown): Uint8Array {
  return toBinary(desc, inKeyOrder(desc, msg as AnyMessage) as never);
}
