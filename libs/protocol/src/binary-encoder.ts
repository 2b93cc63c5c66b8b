// A binary encoder for protobuf-es messages that writes into a reused slab
// instead of a fresh, doubling buffer per message (issue 7). protobuf-es's
// `toBinary` compiles a writer per message type already, but every call starts
// an empty `BinaryWriter`, grows it 128 → 256 → … bytes with a new
// `Uint8Array` each time and copies the result out once more: for the 254-byte
// JobRequest packet the scheduler dispatches, about half of the call's time
// went to those buffers (`--cpu-prof` of a loop of 300,000 encodes).
// Every job is encoded as three packets (submit, dispatch, result) and four
// gRPC messages (two Decide requests, two answers).
//
// `encodeMessage(desc, msg)` returns the deterministic encoding of `msg`: the
// bytes `toBinary(desc, msg)` writes (fields in field-number order, proto3 zero
// values left out, explicit-presence fields written when set, oneofs by their
// case, packed repeated scalars, map entries with key (1) and value (2) always
// written, unknown fields last), except that map entries are written in key
// order, not in the object's key order, as Go's deterministic marshal and
// Python's deterministic serialization write them (D42 signs these bytes, and
// the CAP verifiers re-encode a packet that way before they check it): string
// keys by their UTF-8 bytes ("-z" < "10" < "9" < "b"), integer keys by value
// (signed or unsigned as their type), false before true. A JS object cannot
// hold that order itself: it always lists integer-like keys ("9", "10") first,
// numerically. The test suite compares the bytes with toBinary's, given the
// same message with its map keys listed in that order, on every message type
// of the schemas filled with random values.
//
// It writes each message into a shared slab and returns a view of it (no copy);
// a slab that fills up is replaced, and the old one lives as long as the views
// into it. Message types with wrapper, Struct or group-encoded fields, or
// required fields, are compiled as unsupported and go to `toBinary`, unchanged
// (maps inside keep the object's key order; no CAP or gRPC schema of ours has
// such a type). A value of an unexpected type or out of range abandons the
// write: `toBinary` encodes the message (or throws its own error for it), and
// its bytes, decoded again, now hold only values of the right types and are
// written like any other message, maps in key order.
import { ScalarType, fromBinary, protoInt64, toBinary, type DescField, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { isWrapperDesc } from '@bufbuild/protobuf/wkt';

type AnyMessage = Record<string, unknown> & { $typeName?: string; $unknown?: { no: number; wireType: number; data: Uint8Array }[] };
type Write = (msg: AnyMessage) => void;
interface Compiled {
  typeName: string;
  /** Field writers in field-number order; null when the type is not supported. */
  fields: Write[] | null;
}

/** Presence values of protobuf-es's FieldPresence (editions feature). */
const IMPLICIT = 2;
const LEGACY_REQUIRED = 3;
const SLAB_BYTES = 16 * 1024;
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

/** A value this encoder does not write itself: `toBinary` takes the message. */
class Unsupported extends Error {}
const unsupported = new Unsupported();

let slab = new Uint8Array(SLAB_BYTES);
let slabBuffer = Buffer.from(slab.buffer, slab.byteOffset, slab.byteLength);
let view = new DataView(slab.buffer, slab.byteOffset, slab.byteLength);
/** Where the message being written starts, and the next free byte. */
let start = 0;
let pos = 0;
/** Positions of the one-byte length prefixes of the open length-delimited writes. */
const forks: number[] = [];

function ensure(n: number): void {
  if (pos + n <= slab.length) return;
  const used = pos - start;
  const next = new Uint8Array(Math.max(SLAB_BYTES, 2 * (used + n)));
  next.set(slab.subarray(start, pos));
  for (let i = 0; i < forks.length; i++) forks[i] = (forks[i] as number) - start;
  slab = next;
  slabBuffer = Buffer.from(next.buffer, next.byteOffset, next.byteLength);
  view = new DataView(next.buffer, next.byteOffset, next.byteLength);
  start = 0;
  pos = used;
}

function varint32(v: number): void {
  ensure(5);
  while (v > 0x7f) {
    slab[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  slab[pos++] = v;
}

function varint64(lo: number, hi: number): void {
  ensure(10);
  lo >>>= 0;
  hi >>>= 0;
  while (hi > 0 || lo > 0x7f) {
    slab[pos++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  slab[pos++] = lo;
}

function raw(bytes: Uint8Array): void {
  ensure(bytes.length);
  slab.set(bytes, pos);
  pos += bytes.length;
}

/** A field's tag as the varint value it is written as. */
function tagOf(no: number, wireType: number): number {
  return (no * 8 + wireType) >>> 0;
}

function fork(): void {
  ensure(1);
  forks.push(pos++);
}

function join(): void {
  const len = pos - (forks[forks.length - 1] as number) - 1;
  if (len > 0x7f) ensure(4);
  const at = forks.pop() as number;
  if (len <= 0x7f) {
    slab[at] = len;
    return;
  }
  const size = len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5;
  slab.copyWithin(at + size, at + 1, pos);
  pos += size - 1;
  let p = at;
  let v = len;
  while (v > 0x7f) {
    slab[p++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  slab[p] = v;
}

function writeString(s: unknown): void {
  if (typeof s !== 'string') throw unsupported;
  const n = s.length;
  if (n <= 0x7f) {
    ensure(n + 1);
    let p = pos + 1;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        p = -1;
        break;
      }
      slab[p++] = c;
    }
    if (p >= 0) {
      slab[pos] = n;
      pos = p;
      return;
    }
  }
  const len = Buffer.byteLength(s, 'utf8');
  varint32(len);
  ensure(len);
  slabBuffer.write(s, pos, len, 'utf8');
  pos += len;
}

/** `v` when it is an integer in int32 range; any other value is left to toBinary. */
function asInt32(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) throw unsupported;
  return v;
}

/** `v` when it is an integer in uint32 range; any other value is left to toBinary. */
function asUint32(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > UINT32_MAX) throw unsupported;
  return v;
}

function int32(v: unknown): void {
  const n = asInt32(v);
  if (n >= 0) varint32(n);
  else varint64(n, -1);
}

function fixed32(n: number): void {
  ensure(4);
  view.setUint32(pos, n >>> 0, true);
  pos += 4;
}

function enc64(v: unknown, unsigned: boolean): { lo: number; hi: number } {
  if (typeof v !== 'bigint' && typeof v !== 'string' && typeof v !== 'number') throw unsupported;
  try {
    return unsigned ? protoInt64.uEnc(v) : protoInt64.enc(v);
  } catch {
    throw unsupported;
  }
}

function float(v: unknown): void {
  // A finite value too large for a float32 is refused, as protobuf-es refuses it.
  if (typeof v !== 'number' || (Number.isFinite(v) && !Number.isFinite(Math.fround(v)))) throw unsupported;
  ensure(4);
  view.setFloat32(pos, v, true);
  pos += 4;
}

/** Writes one scalar value of `type` (no tag; the wire type is WIRE_TYPE[type]). */
function scalarWriter(type: ScalarType): (v: unknown) => void {
  switch (type) {
    case ScalarType.STRING:
      return writeString;
    case ScalarType.BOOL:
      return (v) => {
        ensure(1);
        slab[pos++] = v ? 1 : 0;
      };
    case ScalarType.INT32:
      return int32;
    case ScalarType.UINT32:
      return (v) => varint32(asUint32(v));
    case ScalarType.SINT32:
      return (v) => {
        const n = asInt32(v);
        varint32(((n << 1) ^ (n >> 31)) >>> 0);
      };
    case ScalarType.INT64:
      return (v) => {
        const t = enc64(v, false);
        varint64(t.lo, t.hi);
      };
    case ScalarType.UINT64:
      return (v) => {
        const t = enc64(v, true);
        varint64(t.lo, t.hi);
      };
    case ScalarType.SINT64:
      return (v) => {
        const t = enc64(v, false);
        const sign = t.hi >> 31;
        varint64((t.lo << 1) ^ sign, ((t.hi << 1) | (t.lo >>> 31)) ^ sign);
      };
    case ScalarType.FIXED32:
      return (v) => fixed32(asUint32(v));
    case ScalarType.SFIXED32:
      return (v) => fixed32(asInt32(v));
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return (v) => {
        const t = enc64(v, type === ScalarType.FIXED64);
        ensure(8);
        view.setInt32(pos, t.lo, true);
        view.setInt32(pos + 4, t.hi, true);
        pos += 8;
      };
    case ScalarType.FLOAT:
      return float;
    case ScalarType.DOUBLE:
      return (v) => {
        if (typeof v !== 'number') throw unsupported;
        ensure(8);
        view.setFloat64(pos, v, true);
        pos += 8;
      };
    case ScalarType.BYTES:
      return (v) => {
        if (!(v instanceof Uint8Array)) throw unsupported;
        varint32(v.length);
        raw(v);
      };
  }
}

/** The wire type each scalar type is written with: 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit. */
const WIRE_TYPE: Record<ScalarType, number> = {
  [ScalarType.DOUBLE]: 1,
  [ScalarType.FLOAT]: 5,
  [ScalarType.INT64]: 0,
  [ScalarType.UINT64]: 0,
  [ScalarType.INT32]: 0,
  [ScalarType.FIXED64]: 1,
  [ScalarType.FIXED32]: 5,
  [ScalarType.BOOL]: 0,
  [ScalarType.STRING]: 2,
  [ScalarType.BYTES]: 2,
  [ScalarType.UINT32]: 0,
  [ScalarType.SFIXED32]: 5,
  [ScalarType.SFIXED64]: 1,
  [ScalarType.SINT32]: 0,
  [ScalarType.SINT64]: 0,
};

/** proto3 implicit presence: the test for the zero value that is left out, per type. */
function zeroTest(type: ScalarType): (v: unknown) => boolean {
  switch (type) {
    case ScalarType.BOOL:
      return (v) => v === false;
    case ScalarType.STRING:
      return (v) => v === '';
    case ScalarType.BYTES:
      return (v) => v instanceof Uint8Array && v.length === 0;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return (v) => Object.is(v, 0);
    case ScalarType.INT32:
    case ScalarType.UINT32:
    case ScalarType.SINT32:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      // 0, 0n and "0", as protobuf-es compares.
      return (v) => v == 0;
  }
}

/** Map keys are object keys (strings): back to the key's scalar type, as protobuf-es converts them. */
function mapKeyConverter(type: ScalarType): (k: string) => unknown {
  switch (type) {
    case ScalarType.STRING:
      return (k) => k;
    case ScalarType.BOOL:
      return (k) => (k === 'true' ? true : k === 'false' ? false : k);
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return (k) => k; // protoInt64 parses the string form
    case ScalarType.INT32:
    case ScalarType.UINT32:
    case ScalarType.SINT32:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.DOUBLE: // not valid map key types in a .proto: converted like the integers, as protobuf-es does
    case ScalarType.FLOAT:
    case ScalarType.BYTES:
      return (k) => {
        const n = Number.parseInt(k); // no radix, as protobuf-es converts keys
        return Number.isFinite(n) ? n : k;
      };
  }
}

/**
 * Orders two strings by their UTF-8 encodings, as Go compares strings (bytes) and Python its
 * deterministic map keys. UTF-16 code units below 0xD800 order like the code points, and before
 * any unit from 0xD800 up; two units from 0xD800 up (surrogates, U+E000–U+FFFF) do not, so
 * those rare keys compare their encodings (a lone surrogate encodes as U+FFFD, as written).
 */
export function compareUtf8(a: string, b: string): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 || y < 0xd800) return x - y;
    return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  }
  return a.length - b.length;
}

/** A 64-bit key as the integer it is written as; a key that is no integer is left to toBinary. */
function bigKey(k: string, unsigned: boolean): bigint {
  let n: bigint;
  try {
    n = BigInt(k);
  } catch {
    throw unsupported;
  }
  return unsigned ? BigInt.asUintN(64, n) : BigInt.asIntN(64, n);
}

/**
 * The order map entries are written in, by key type (Go's deterministic marshal: false before
 * true, integers ascending, strings by their bytes). Keys are object keys, i.e. strings.
 */
function keyOrder(type: ScalarType): (a: string, b: string) => number {
  switch (type) {
    case ScalarType.STRING:
      return compareUtf8;
    case ScalarType.BOOL:
      return (a, b) => (a < b ? -1 : a > b ? 1 : 0); // "false" < "true"
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64: {
      const unsigned = type === ScalarType.UINT64 || type === ScalarType.FIXED64;
      return (a, b) => {
        const x = bigKey(a, unsigned);
        const y = bigKey(b, unsigned);
        return x < y ? -1 : x > y ? 1 : 0;
      };
    }
    case ScalarType.INT32:
    case ScalarType.UINT32:
    case ScalarType.SINT32:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.DOUBLE: // not valid map key types; converted like the integers (mapKeyConverter)
    case ScalarType.FLOAT:
    case ScalarType.BYTES:
      return (a, b) => Number.parseInt(a) - Number.parseInt(b);
  }
}

/**
 * The keys of `rec` in `order`. The common cases cost one pass: no key or one, or keys already
 * listed in order (maps built in order, or decoded from a deterministic encoding); only the
 * others are sorted (stable, so keys that compare equal keep their order).
 */
function orderedKeys(rec: Record<string, unknown>, order: (a: string, b: string) => number): string[] {
  const keys = Object.keys(rec);
  for (let i = 1; i < keys.length; i++) {
    if (order(keys[i - 1] as string, keys[i] as string) > 0) return keys.sort(order);
  }
  return keys;
}

const compiledTypes = new WeakMap<DescMessage, Compiled>();

function supported(f: DescField): boolean {
  if (f.presence === LEGACY_REQUIRED) return false;
  let m: DescMessage | undefined;
  if (f.fieldKind === 'message' || (f.fieldKind === 'list' && f.listKind === 'message')) {
    if (f.delimitedEncoding) return false;
    m = f.message;
  } else if (f.fieldKind === 'map' && f.mapKind === 'message') {
    m = f.message;
  }
  if (!m) return true;
  return !isWrapperDesc(m) && m.typeName !== 'google.protobuf.Struct' && m.typeName !== 'google.protobuf.Value' && m.typeName !== 'google.protobuf.ListValue';
}

function compile(desc: DescMessage): Compiled {
  let c = compiledTypes.get(desc);
  if (c) return c;
  c = { typeName: desc.typeName, fields: [] };
  // Registered before its fields compile, so a recursive type finds itself.
  compiledTypes.set(desc, c);
  const fields = [...desc.fields].sort((a, b) => a.number - b.number);
  c.fields = fields.every(supported) ? fields.map(compileField) : null;
  return c;
}

/**
 * Writes a nested message (its tag, length prefix and fields). A child type this encoder does
 * not write (a required or group field somewhere inside) hands the message to toBinary, when
 * such a child is actually present.
 */
function childWriter(no: number, desc: DescMessage): (v: unknown) => void {
  const child = compile(desc);
  const tag = tagOf(no, 2);
  const check = (): Write[] => {
    if (child.fields === null) throw unsupported;
    return child.fields;
  };
  return (v) => {
    varint32(tag);
    fork();
    if (v !== undefined) writeFields(check(), child.typeName, v as AnyMessage);
    join();
  };
}

function compileField(f: DescField): Write {
  const name = f.localName;
  switch (f.fieldKind) {
    case 'scalar':
    case 'enum': {
      const type = f.fieldKind === 'enum' ? ScalarType.INT32 : f.scalar;
      const tag = tagOf(f.number, WIRE_TYPE[type]);
      const write = scalarWriter(type);
      const one = (v: unknown): void => {
        varint32(tag);
        write(v);
      };
      if (f.oneof) return oneofWriter(f.oneof.localName, name, one);
      if (f.presence !== IMPLICIT) return presenceWriter(name, one);
      if (f.fieldKind === 'enum') {
        const zero = f.enum.values[0]?.number ?? 0;
        return (m) => {
          const v = m[name];
          if (v !== zero) one(v);
        };
      }
      const isZero = zeroTest(type);
      return (m) => {
        const v = m[name];
        if (!isZero(v)) one(v);
      };
    }
    case 'message': {
      const one = childWriter(f.number, f.message);
      if (f.oneof) return oneofWriter(f.oneof.localName, name, one);
      return presenceWriter(name, one);
    }
    case 'list': {
      if (f.listKind === 'message') {
        const one = childWriter(f.number, f.message);
        return (m) => {
          const items = m[name] as unknown[];
          for (let i = 0; i < items.length; i++) one(items[i]);
        };
      }
      const type = f.listKind === 'enum' ? ScalarType.INT32 : f.scalar;
      const write = scalarWriter(type);
      if (f.packed) {
        const tag = tagOf(f.number, 2);
        return (m) => {
          const items = m[name] as unknown[];
          if (items.length === 0) return;
          varint32(tag);
          fork();
          for (let i = 0; i < items.length; i++) write(items[i]);
          join();
        };
      }
      const tag = tagOf(f.number, WIRE_TYPE[type]);
      return (m) => {
        const items = m[name] as unknown[];
        for (let i = 0; i < items.length; i++) {
          varint32(tag);
          write(items[i]);
        }
      };
    }
    case 'map': {
      const entryTag = tagOf(f.number, 2);
      const keyTag = tagOf(1, WIRE_TYPE[f.mapKey]);
      const writeKey = scalarWriter(f.mapKey);
      const toKey = mapKeyConverter(f.mapKey);
      const order = keyOrder(f.mapKey);
      let writeValue: (v: unknown) => void;
      if (f.mapKind === 'message') {
        writeValue = childWriter(2, f.message);
      } else {
        const type = f.mapKind === 'enum' ? ScalarType.INT32 : f.scalar;
        const valueTag = tagOf(2, WIRE_TYPE[type]);
        const write = scalarWriter(type);
        writeValue = (v) => {
          varint32(valueTag);
          write(v);
        };
      }
      return (m) => {
        const rec = m[name] as Record<string, unknown>;
        const keys = orderedKeys(rec, order);
        for (let i = 0; i < keys.length; i++) {
          const k = keys[i] as string;
          varint32(entryTag);
          fork();
          varint32(keyTag);
          writeKey(toKey(k));
          writeValue(rec[k]);
          join();
        }
      };
    }
  }
}

function oneofWriter(oneofName: string, name: string, one: (v: unknown) => void): Write {
  return (m) => {
    const o = m[oneofName] as { case?: string; value?: unknown } | undefined;
    if (o?.case === name) one(o.value);
  };
}

function presenceWriter(name: string, one: (v: unknown) => void): Write {
  return (m) => {
    const v = m[name];
    if (v !== undefined && Object.prototype.hasOwnProperty.call(m, name)) one(v);
  };
}

function writeFields(fields: Write[], typeName: string, m: AnyMessage): void {
  if (m.$typeName !== typeName) throw unsupported;
  for (let i = 0; i < fields.length; i++) (fields[i] as Write)(m);
  const unknown = m.$unknown;
  if (unknown !== undefined) {
    for (const u of unknown) {
      varint32(tagOf(u.no, u.wireType));
      raw(u.data);
    }
  }
}

/** Writes `msg` with the compiled writers; undefined when a value is one this encoder leaves to toBinary. */
function write(fields: Write[], typeName: string, msg: AnyMessage): Uint8Array | undefined {
  start = pos;
  forks.length = 0;
  try {
    writeFields(fields, typeName, msg);
  } catch (err) {
    pos = start;
    forks.length = 0;
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
  const out = slab.subarray(start, pos);
  start = pos;
  return out;
}

/**
 * The deterministic encoding of `msg` (see the top of this file): toBinary's bytes with map
 * entries in key order, written without toBinary's per-call buffers.
 */
export function encodeMessage<D extends DescMessage>(desc: D, msg: MessageShape<D>): Uint8Array {
  const { fields, typeName } = compile(desc);
  if (fields === null) return toBinary(desc, msg);
  const out = write(fields, typeName, msg as unknown as AnyMessage);
  if (out !== undefined) return out;
  // A value of an unexpected type: toBinary converts it or throws. Decoded again, its bytes are
  // a message of well-typed values, written like any other so that its maps are in key order too
  // (only a nested type this encoder does not write keeps toBinary's bytes as they are).
  const bytes = toBinary(desc, msg);
  return write(fields, typeName, fromBinary(desc, bytes) as unknown as AnyMessage) ?? bytes;
}
