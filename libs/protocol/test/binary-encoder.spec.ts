import { ScalarType, create, createFileRegistry, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import type { GenFile } from '@bufbuild/protobuf/codegenv2';
import { FileDescriptorProtoSchema, Int32ValueSchema, StructSchema, TimestampSchema, file_google_protobuf_struct } from '@bufbuild/protobuf/wkt';
import { encodeMessage } from '../src/binary-encoder';
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
import { VECTOR_NAMES, readVector } from './fixtures';

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
  if (t === ScalarType.STRING) return pick(r, ['a', 'b', 'z', '10', '2', 'ключ', '', 'env_' + Math.floor(r() * 100)]);
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

  it('writes the bytes toBinary writes, for every message type filled with random values', () => {
    const r = rng(7);
    let compared = 0;
    for (const desc of [...types, allScalarsType(), TimestampSchema, Int32ValueSchema, ...messagesOf([file_google_protobuf_struct])]) {
      for (let i = 0; i < 100; i++) {
        const msg = randomMessage(r, desc);
        const want = toBinary(desc, msg as never);
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
      kept.push({ got: encodeMessage(JobRequestSchema, msg as never), want: toBinary(JobRequestSchema, msg as never) });
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

  it('leaves types it does not write (Struct) to toBinary', () => {
    const s = create(StructSchema, { fields: { a: { kind: { case: 'numberValue', value: 1 } } } });
    expect(sameBytes(encodeMessage(StructSchema, s), toBinary(StructSchema, s))).toBe(true);
  });
});
