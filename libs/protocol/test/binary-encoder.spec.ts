import { ScalarType, create, createFileRegistry, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import type { GenFile } from '@bufbuild/protobuf/codegenv2';
import { FileDescriptorProtoSchema, Int32ValueSchema, StructSchema, TimestampSchema, file_google_protobuf_struct } from '@bufbuild/protobuf/wkt';
import { compareUtf8, encodeMessage } from '../src/binary-encoder';
import {
  BusPacketSchema,
  JobRequestSchema,
  decodePacket,
  file_cordum_agent_v1_alert,
  file_cordum_agent_v1_buspacket,
  file_cordum_agent_v1_handshake,
  file_cordum_agent_v1_heartbeat,
  file_cordum_agent_v1_job,
  file_cordum_v1_api,
  file_cordum_v1_safety,
  file_grpc_health_v1_health,
} from '../src';
import { seededRandom as rng } from '@cordum/testing';
import { VECTOR_NAMES, readVector, referenceKeyOrder, toBinaryInKeyOrder } from './fixtures';

type AnyMessage = Record<string, unknown>;

function messagesOf(files: GenFile[]): DescMessage[] {
  const out: DescMessage[] = [];
  const add = (m: DescMessage): void => {
    out.push(m);
    m.nestedMessages.forEach(add);
  };
  for (const f of files) f.messages.forEach(add);
  return out;
}

const SCHEMA_FILES = [
  file_cordum_agent_v1_buspacket,
  file_cordum_agent_v1_job,
  file_cordum_agent_v1_heartbeat,
  file_cordum_agent_v1_handshake,
  file_cordum_agent_v1_alert,
  file_cordum_v1_safety,
  file_cordum_v1_api,
  file_grpc_health_v1_health,
];

/**
 * A proto3 message with a field of every scalar type (singular, packed, unpacked) and maps
 * keyed by several of them: the schemas use only some types (no fixed, sfixed, sint or double
 * field), and the encoder writes each type with its own code.
 */
function allScalarsType(): DescMessage {
  const types: [string, number][] = [
    ['double', 1], ['float', 2], ['int64', 3], ['uint64', 4], ['int32', 5], ['fixed64', 6], ['fixed32', 7], ['bool', 8],
    ['string', 9], ['bytes', 12], ['uint32', 13], ['sfixed32', 15], ['sfixed64', 16], ['sint32', 17], ['sint64', 18],
  ];
  const fields = types.flatMap(([name, type], i) => [
    { name: `s_${name}`, number: i + 1, label: 1, type, jsonName: `s${name}` },
    { name: `r_${name}`, number: i + 101, label: 3, type, jsonName: `r${name}` },
    { name: `u_${name}`, number: i + 201, label: 3, type, jsonName: `u${name}`, options: { packed: false } },
  ]);
  const entry = (name: string, key: number, value: number, typeName?: string) => ({
    name,
    field: [
      { name: 'key', number: 1, label: 1, type: key, jsonName: 'key' },
      { name: 'value', number: 2, label: 1, type: value, jsonName: 'value', ...(typeName ? { typeName } : {}) },
    ],
    options: { mapEntry: true },
  });
  const maps = [
    { name: 'm_int32', number: 301, entry: entry('MInt32Entry', 5, 9) },
    { name: 'm_sint64', number: 302, entry: entry('MSint64Entry', 18, 7) },
    { name: 'm_bool', number: 303, entry: entry('MBoolEntry', 8, 1) },
    { name: 'm_fixed32', number: 304, entry: entry('MFixed32Entry', 7, 17) },
    { name: 'm_uint64', number: 305, entry: entry('MUint64Entry', 4, 11, '.cordum.test.v1.AllScalars') },
  ];
  const file = create(FileDescriptorProtoSchema, {
    name: 'cordum/test/v1/all_scalars.proto',
    package: 'cordum.test.v1',
    syntax: 'proto3',
    messageType: [
      {
        name: 'AllScalars',
        field: [
          ...fields,
          ...maps.map((m) => ({ name: m.name, number: m.number, label: 3, type: 11, typeName: `.cordum.test.v1.AllScalars.${m.entry.name}`, jsonName: m.name })),
          { name: 'child', number: 400, label: 1, type: 11, typeName: '.cordum.test.v1.AllScalars', jsonName: 'child' },
        ],
        nestedType: maps.map((m) => m.entry),
      },
    ],
  });
  const desc = createFileRegistry(file, () => undefined).getMessage('cordum.test.v1.AllScalars');
  if (!desc) throw new Error('AllScalars did not register');
  return desc;
}

const STRINGS = ['', 'a', 'job.echo', 'é', '日本語', '🙂', '\ud800', 'x\udc00y', 'a'.repeat(127), 'b'.repeat(128), 'é'.repeat(64), 'c'.repeat(20_000)];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)] as T;
}

function scalarValue(r: () => number, t: ScalarType): unknown {
  const zero = r() < 0.3;
  switch (t) {
    case ScalarType.STRING:
      return zero ? '' : pick(r, STRINGS);
    case ScalarType.BOOL:
      return zero ? false : r() < 0.5;
    case ScalarType.BYTES:
      return zero ? new Uint8Array(0) : Uint8Array.from({ length: pick(r, [1, 5, 200]) }, () => Math.floor(r() * 256));
    case ScalarType.DOUBLE:
      return zero ? 0 : pick(r, [-0, 1.5, -2.25e300, Number.NaN, Number.POSITIVE_INFINITY, r() * 1e6]);
    case ScalarType.FLOAT:
      return zero ? 0 : pick(r, [-0, 1.5, 3.4e38, -1e-30, Number.NaN, Number.NEGATIVE_INFINITY, Math.fround(r())]);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return zero ? 0 : pick(r, [1, -1, 127, 128, 300, -2147483648, 2147483647, Math.floor(r() * 1e6) - 5e5]);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return zero ? 0 : pick(r, [1, 127, 128, 16384, 4294967295, Math.floor(r() * 4e9)]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return zero ? 0n : pick(r, [1n, -1n, 1_700_000_000_000n, -(2n ** 63n), 2n ** 63n - 1n, BigInt(Math.floor(r() * 1e9))]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return zero ? 0n : pick(r, [1n, 2n ** 64n - 1n, 2n ** 35n, BigInt(Math.floor(r() * 1e9))]);
  }
}

function enumValue(r: () => number, f: Extract<DescField, { fieldKind: 'enum' }>['enum']): number {
  return r() < 0.8 ? pick(r, f.values).number : pick(r, [-1, 99, 2147483647]);
}

function mapKey(r: () => number, t: ScalarType): string {
  // Integer-like keys, which objects list first and numerically, and keys whose UTF-16 order is not their UTF-8 order.
  if (t === ScalarType.STRING) return pick(r, ['a', 'b', 'z', '10', '2', '9', '-z', 'ключ', '', '🙂', '\uff61', '\ud800', 'env_' + Math.floor(r() * 100)]);
  if (t === ScalarType.BOOL) return r() < 0.5 ? 'true' : 'false';
  const unsigned = t === ScalarType.UINT32 || t === ScalarType.FIXED32 || t === ScalarType.UINT64 || t === ScalarType.FIXED64;
  return String(pick(r, unsigned ? [0, 1, 7, 300, 4294967295] : [0, 1, 7, 300, -5, -2147483648]));
}

/** A message of type `desc` with random values in every field (depth-limited for recursive types). */
function randomMessage(r: () => number, desc: DescMessage, depth = 0): AnyMessage {
  const m = create(desc) as unknown as AnyMessage;
  for (const f of desc.fields) {
    if (r() < 0.25) continue; // left at its default
    let value: unknown;
    switch (f.fieldKind) {
      case 'scalar':
        value = scalarValue(r, f.scalar);
        break;
      case 'enum':
        value = enumValue(r, f.enum);
        break;
      case 'message':
        if (depth > 3) continue;
        value = randomMessage(r, f.message, depth + 1);
        break;
      case 'list': {
        const n = Math.floor(r() * 4);
        value = Array.from({ length: n }, () =>
          f.listKind === 'message' ? (depth > 3 ? create(f.message) : randomMessage(r, f.message, depth + 1)) : f.listKind === 'enum' ? enumValue(r, f.enum) : scalarValue(r, f.scalar),
        );
        break;
      }
      case 'map': {
        const rec: Record<string, unknown> = {};
        const n = Math.floor(r() * 4);
        for (let i = 0; i < n; i++) {
          rec[mapKey(r, f.mapKey)] =
            f.mapKind === 'message' ? (depth > 3 ? create(f.message) : randomMessage(r, f.message, depth + 1)) : f.mapKind === 'enum' ? enumValue(r, f.enum) : scalarValue(r, f.scalar);
        }
        value = rec;
        break;
      }
    }
    if (f.oneof) {
      if ((m[f.oneof.localName] as { case?: string }).case === undefined || r() < 0.3) m[f.oneof.localName] = { case: f.localName, value };
    } else {
      m[f.localName] = value;
    }
  }
  if (r() < 0.1) m.$unknown = [{ no: 4000 + Math.floor(r() * 100), wireType: 0, data: Uint8Array.of(0x96, 0x01) }];
  return m;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

describe('encodeMessage', () => {
  const types = messagesOf(SCHEMA_FILES);

  it('covers every message type of the schemas', () => {
    expect(types.length).toBeGreaterThanOrEqual(31);
    expect(types.map((t) => t.typeName)).toEqual(expect.arrayContaining(['cordum.agent.v1.BusPacket', 'cordum.v1.PolicyStreamRequest', 'cordum.agent.v1.JobRequest']));
  });

  it('writes the bytes toBinary writes, map entries in key order, for every message type filled with random values', () => {
    const r = rng(7);
    let compared = 0;
    for (const desc of [...types, allScalarsType(), TimestampSchema, Int32ValueSchema, ...messagesOf([file_google_protobuf_struct])]) {
      for (let i = 0; i < 100; i++) {
        const msg = randomMessage(r, desc);
        const want = toBinaryInKeyOrder(desc, msg);
        const got = encodeMessage(desc, msg as never);
        if (!sameBytes(got, want)) throw new Error(`${desc.typeName} case ${i}: ${Buffer.from(got).toString('hex')} != ${Buffer.from(want).toString('hex')}`);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(3600);
  });

  it('re-encodes every reference vector as toBinary does', () => {
    for (const name of VECTOR_NAMES) {
      const p = decodePacket(readVector(name));
      expect(sameBytes(encodeMessage(BusPacketSchema, p), toBinary(BusPacketSchema, p))).toBe(true);
    }
  });

  it('keeps every returned view intact while later messages fill and replace the slab', () => {
    const r = rng(11);
    const kept: { got: Uint8Array; want: Uint8Array }[] = [];
    for (let i = 0; i < 3000; i++) {
      const msg = randomMessage(r, JobRequestSchema);
      kept.push({ got: encodeMessage(JobRequestSchema, msg as never), want: toBinaryInKeyOrder(JobRequestSchema, msg) });
    }
    expect(kept.every(({ got, want }) => sameBytes(got, want))).toBe(true);
    // Views never overlap: writing into one leaves the next unchanged.
    const a = encodeMessage(JobRequestSchema, create(JobRequestSchema, { jobId: 'a', topic: 'job.a' }));
    const b = encodeMessage(JobRequestSchema, create(JobRequestSchema, { jobId: 'b', topic: 'job.b' }));
    a.fill(0);
    expect(sameBytes(b, toBinary(JobRequestSchema, create(JobRequestSchema, { jobId: 'b', topic: 'job.b' })))).toBe(true);
  });

  it('writes nested lengths that need two, three and four bytes', () => {
    for (const n of [127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const msg = create(BusPacketSchema, { traceId: 't', payload: { case: 'jobRequest', value: { jobId: 'x'.repeat(n), meta: { labels: { k: 'v'.repeat(n) } } } } });
      expect(sameBytes(encodeMessage(BusPacketSchema, msg), toBinary(BusPacketSchema, msg))).toBe(true);
    }
  });

  it('hands values of the wrong type to toBinary: the same bytes, or the same error', () => {
    const asString = create(JobRequestSchema, { jobId: 'j' }) as unknown as AnyMessage;
    asString.stepIndex = '12'; // protobuf-es accepts a numeric string for int32
    expect(sameBytes(encodeMessage(JobRequestSchema, asString as never), toBinary(JobRequestSchema, asString as never))).toBe(true);
    const fraction = create(JobRequestSchema, { jobId: 'j' }) as unknown as AnyMessage;
    fraction.stepIndex = 1.5;
    expect(() => toBinary(JobRequestSchema, fraction as never)).toThrow(/invalid int32/);
    expect(() => encodeMessage(JobRequestSchema, fraction as never)).toThrow(/invalid int32/);
    // The failed write left nothing behind: the next message is whole.
    const next = create(JobRequestSchema, { jobId: 'after' });
    expect(sameBytes(encodeMessage(JobRequestSchema, next), toBinary(JobRequestSchema, next))).toBe(true);
  });

  it('writes map entries in key order whatever order the object lists them in: UTF-8 bytes, integers by value, false first', () => {
    // Entry bytes of a map<string, string> field 15 (JobRequest.labels): 7a len 0a klen key 12 vlen value.
    const entry = (k: string): Buffer => {
      const key = Buffer.from(k, 'utf8');
      return Buffer.from([0x7a, key.length + 5, 0x0a, key.length, ...key, 0x12, 1, 0x76]);
    };
    // Objects list "9", "10" first (numerically); UTF-16 puts "🙂" (d83d…) before "｡" (ff61), UTF-8 after.
    const labels = Object.fromEntries(['b', '10', '🙂', '-z', '9', '\uff61', 'é', '2'].map((k) => [k, 'v']));
    expect(Object.keys(labels).slice(0, 3)).toEqual(['2', '9', '10']);
    const bytes = Buffer.from(encodeMessage(JobRequestSchema, create(JobRequestSchema, { labels })));
    expect(bytes).toEqual(Buffer.concat(['-z', '10', '2', '9', 'b', 'é', '\uff61', '🙂'].map(entry)));

    // Every key type of the test-built message, with message values that hold maps themselves.
    const desc = allScalarsType();
    const m = create(desc) as unknown as AnyMessage;
    const child = create(desc) as unknown as AnyMessage;
    child.mFixed32 = { '10': 1, '9': 2, '4294967295': 3 };
    child.mBool = { true: 1.5, false: 2.5 };
    m.mInt32 = { '300': 'a', '7': 'b', '-5': 'c', '0': 'd', '-2147483648': 'e', '2147483647': 'f' };
    m.mSint64 = { '7': 1, '-5': 2, '-9223372036854775808': 3, '9223372036854775807': 4, '1': 5 };
    m.mBool = { true: 1, false: 2 };
    m.mFixed32 = { '4294967295': 1, '1': -2, '0': 3 };
    m.mUint64 = { '18446744073709551615': child, '10': child, '9': create(desc), '0': child };
    const got = encodeMessage(desc, m as never);
    expect(sameBytes(got, toBinaryInKeyOrder(desc, m))).toBe(true);
    expect(sameBytes(got, toBinary(desc, m as never))).toBe(false); // toBinary alone follows the objects
    // m_int32 (field 301, entry tag ea 12, then length and the key's tag 08): keys ascending as signed values.
    const int32Keys: number[] = [];
    const wire = Buffer.from(got);
    for (let i = 0; i < wire.length - 2; i++) {
      if (wire[i] === 0xea && wire[i + 1] === 0x12 && wire[i + 3] === 0x08) {
        const entryBytes = wire.subarray(i + 4, i + 4 + (wire[i + 2] as number) - 1);
        let v = 0n;
        for (let j = 0; j < entryBytes.length; j++) {
          v |= BigInt((entryBytes[j] as number) & 0x7f) << BigInt(7 * j);
          if (((entryBytes[j] as number) & 0x80) === 0) break;
        }
        int32Keys.push(Number(BigInt.asIntN(64, v)));
      }
    }
    expect(int32Keys).toEqual([-2147483648, -5, 0, 7, 300, 2147483647]);
  });

  it('orders strings as their UTF-8 bytes, lone surrogates as the U+FFFD they are written as', () => {
    const keys = ['b', '10', '9', '-z', '', 'é', '\uff61', '🙂', '\ud800', '\ud800x', 'x\ud83d', 'x\ud83d\ude42', '\ue000', '\uffff', 'a', 'ab'];
    const byBytes = referenceKeyOrder(ScalarType.STRING);
    for (const a of keys) for (const b of keys) expect([a, b, Math.sign(compareUtf8(a, b))]).toEqual([a, b, Math.sign(byBytes(a, b))]);
  });

  it('writes a message it handed to toBinary (a value of the wrong type) like the fast path: maps in key order too', () => {
    const init = { jobId: 'j', labels: { '10': 'x', '9': 'y', '-z': 'w', b: 'v' }, env: { '2': 'a', '1': 'b' }, meta: { labels: { '10': 'x', '9': 'y' } } };
    const wellTyped = create(JobRequestSchema, { ...init, stepIndex: 12 });
    const asString = create(JobRequestSchema, init) as unknown as AnyMessage;
    asString.stepIndex = '12'; // the fast path refuses it; toBinary accepts a numeric string
    const fast = Buffer.from(encodeMessage(JobRequestSchema, wellTyped));
    expect(Buffer.from(encodeMessage(JobRequestSchema, asString as never))).toEqual(fast);
    expect(sameBytes(fast, toBinaryInKeyOrder(JobRequestSchema, wellTyped))).toBe(true);
    expect(sameBytes(fast, toBinary(JobRequestSchema, wellTyped))).toBe(false);
  });

  it('leaves types it does not write (Struct) to toBinary', () => {
    const s = create(StructSchema, { fields: { a: { kind: { case: 'numberValue', value: 1 } } } });
    expect(sameBytes(encodeMessage(StructSchema, s), toBinary(StructSchema, s))).toBe(true);
  });
});
