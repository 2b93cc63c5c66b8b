import { ProtocolError } from './errors';

/**
 * Minimal protobuf wire-format walker. Signature verification must hash the
 * bytes exactly as received minus field 14 (encoders order fields differently),
 * so we cut tags out of the original buffer instead of re-encoding.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

function malformed(msg: string): ProtocolError {
  return new ProtocolError('malformed_wire', `malformed protobuf: ${msg}`);
}

/** Reads a varint at `pos`; returns [value, nextPos]. Values above 2^53 lose precision but only lengths and tags are used. */
function readVarint(buf: Uint8Array, pos: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw malformed('truncated varint');
    const b = buf[pos++] as number;
    if (i === 9 && b > 1) throw malformed('varint overflows 64 bits');
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
  throw malformed('varint longer than 10 bytes');
}

export interface StrippedField {
  /** The input with every top-level occurrence of the field removed. */
  rest: Uint8Array;
  /** Payloads of the removed length-delimited occurrences, in wire order. */
  values: Uint8Array[];
}

/**
 * Removes every top-level occurrence of `fieldNo` (which must be
 * length-delimited when present). Throws ProtocolError('malformed_wire') on
 * truncated input, invalid tags, group wire types or a non-LEN field `fieldNo`.
 */
export function stripTopLevelField(bytes: Uint8Array, fieldNo: number): StrippedField {
  const keep: Array<[number, number]> = [];
  const values: Uint8Array[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const start = pos;
    const [tag, afterTag] = readVarint(bytes, pos);
    if (tag > 0xffffffff) throw malformed(`tag ${tag} out of range at offset ${start}`);
    const no = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (no === 0) throw malformed(`field number 0 at offset ${start}`);
    pos = afterTag;
    let valueStart = pos;
    switch (wireType) {
      case WIRE_VARINT:
        pos = readVarint(bytes, pos)[1];
        break;
      case WIRE_I64:
        pos += 8;
        break;
      case WIRE_LEN: {
        const [len, afterLen] = readVarint(bytes, pos);
        valueStart = afterLen;
        pos = afterLen + len;
        break;
      }
      case WIRE_I32:
        pos += 4;
        break;
      default:
        // Groups (3/4) never appear in proto3 CAP packets; 6/7 are invalid.
        throw malformed(`unsupported wire type ${wireType} for field ${no} at offset ${start}`);
    }
    if (pos > bytes.length) throw malformed(`field ${no} runs past the end at offset ${start}`);
    if (no === fieldNo) {
      if (wireType !== WIRE_LEN) throw malformed(`field ${no} has wire type ${wireType}, expected length-delimited`);
      values.push(bytes.subarray(valueStart, pos));
    } else {
      const last = keep[keep.length - 1];
      if (last && last[1] === start) last[1] = pos;
      else keep.push([start, pos]);
    }
  }
  if (values.length === 0) return { rest: bytes, values };
  const total = keep.reduce((n, [a, b]) => n + (b - a), 0);
  const rest = new Uint8Array(total);
  let off = 0;
  for (const [a, b] of keep) {
    rest.set(bytes.subarray(a, b), off);
    off += b - a;
  }
  return { rest, values };
}

function pushVarint(out: number[], value: number): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** Encodes a length-delimited field (tag + varint length + payload). */
export function encodeLenField(fieldNo: number, payload: Uint8Array): Uint8Array {
  const head: number[] = [];
  pushVarint(head, fieldNo * 8 + WIRE_LEN);
  pushVarint(head, payload.length);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}
