import {
  BusPacketSchema,
  HandshakeSchema,
  HeartbeatSchema,
  JobCancelSchema,
  JobMetadataSchema,
  JobProgressSchema,
  JobRequestSchema,
  JobResultSchema,
  PROTOCOL_VERSION,
  SystemAlertSchema,
  create,
  decodePacket,
  encodePacket,
  equals,
  isProtocolError,
  newPacket,
  timestampMs,
  validatePacket,
} from '../src';
import type { BusPacket } from '../src';
import { readVector, toBinaryInKeyOrder } from './fixtures';
import { CompensationSchema, encodeForSigning } from '../src';

function codeOf(fn: () => unknown): { code: string; message: string } | undefined {
  try {
    fn();
  } catch (err) {
    if (isProtocolError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  return undefined;
}

describe('encodePacket', () => {
  it('is deterministic: map insertion order (also nested in meta) does not change the bytes', () => {
    const build = (order: string[]): BusPacket => {
      const labels: Record<string, string> = {};
      for (const k of order) labels[k] = `v-${k}`;
      const p = newPacket(
        's',
        {
          case: 'jobRequest',
          value: create(JobRequestSchema, {
            jobId: 'j',
            topic: 'job.x',
            labels,
            env: { ...labels },
            meta: create(JobMetadataSchema, { labels: { ...labels } }),
          }),
        },
        't',
      );
      p.createdAt = { $typeName: 'google.protobuf.Timestamp', seconds: 1n, nanos: 2 };
      return p;
    };
    const a = encodePacket(build(['b', 'a', 'c', 'A', '_']));
    const b = encodePacket(build(['_', 'c', 'A', 'a', 'b']));
    expect(Buffer.from(a)).toEqual(Buffer.from(b));
    // Sorted: "A" < "_" < "a" < "b" < "c" appear in that order in the bytes.
    const text = Buffer.from(a).toString('latin1');
    const pos = ['v-A', 'v-_', 'v-a', 'v-b', 'v-c'].map((v) => text.indexOf(v));
    expect([...pos].sort((x, y) => x - y)).toEqual(pos);
  });

  it('sorts a map that is out of order only deep inside (meta.labels), and encodes sorted maps as they are', () => {
    const build = (top: string[], nested: string[]): BusPacket => {
      const m = (keys: string[]): Record<string, string> => Object.fromEntries(keys.map((k) => [k, `v-${k}`]));
      const p = newPacket('s', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', topic: 'job.x', labels: m(top), env: m(top), meta: create(JobMetadataSchema, { labels: m(nested) }) }) }, 't');
      p.createdAt = { $typeName: 'google.protobuf.Timestamp', seconds: 1n, nanos: 2 };
      return p;
    };
    const sorted = encodePacket(build(['a', 'b', 'c'], ['x', 'y', 'z']));
    expect(Buffer.from(encodePacket(build(['a', 'b', 'c'], ['z', 'x', 'y'])))).toEqual(Buffer.from(sorted));
    expect(Buffer.from(encodePacket(build(['c', 'a', 'b'], ['x', 'y', 'z'])))).toEqual(Buffer.from(sorted));
    // Integer-like keys enumerate numerically ("9" before "10"), against string order: still one encoding.
    expect(Buffer.from(encodePacket(build(['9', '10', 'a'], ['x'])))).toEqual(Buffer.from(encodePacket(build(['a', '10', '9'], ['x']))));
  });

  it('writes every map of every payload in UTF-8 key order, integer-like keys included (as Go and Python re-encode it)', () => {
    // Objects list "2", "9", "10" first (numerically); UTF-16 puts "🙂" before "｡", UTF-8 after.
    const inserted = ['b', '10', '🙂', '-z', '9', '\uff61', 'é', '2'];
    const byBytes = ['-z', '10', '2', '9', 'b', 'é', '\uff61', '🙂'];
    const strings = (): Record<string, string> => Object.fromEntries(inserted.map((k) => [k, `v${k}`]));
    const bools = (): Record<string, boolean> => Object.fromEntries(inserted.map((k, i) => [k, i % 2 === 0]));
    const cases: [string, BusPacket['payload']][] = [
      ['job_request.labels', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', topic: 'job.x', labels: strings() }) }],
      ['job_request.env', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', topic: 'job.x', env: strings() }) }],
      ['job_request.meta.labels', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', topic: 'job.x', meta: create(JobMetadataSchema, { labels: strings() }) }) }],
      ['job_request.compensation.env', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', compensation: create(CompensationSchema, { env: strings() }) }) }],
      ['job_request.compensation.labels', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', compensation: create(CompensationSchema, { labels: strings() }) }) }],
      ['job_request.compensation.meta.labels', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', compensation: create(CompensationSchema, { meta: { labels: strings() } }) }) }],
      ['heartbeat.labels', { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'w', labels: strings() }) }],
      ['alert.details', { case: 'alert', value: create(SystemAlertSchema, { message: 'm', details: strings() }) }],
      ['handshake.capabilities', { case: 'handshake', value: create(HandshakeSchema, { componentId: 'c', capabilities: bools() }) }],
    ];
    for (const [name, payload] of cases) {
      const p = newPacket('s', payload, 't');
      for (const bytes of [encodePacket(p), encodeForSigning(p)]) {
        const buf = Buffer.from(bytes);
        // Each entry's key is written as 0a <len> <key>; find them in the bytes.
        const at = inserted.map((k) => [k, buf.indexOf(Buffer.from([0x0a, Buffer.byteLength(k), ...Buffer.from(k)]))] as const);
        expect([name, at.every(([, i]) => i >= 0)]).toEqual([name, true]);
        expect([name, [...at].sort((x, y) => x[1] - y[1]).map(([k]) => k)]).toEqual([name, byBytes]);
        expect([name, buf]).toEqual([name, Buffer.from(toBinaryInKeyOrder(BusPacketSchema, p))]);
      }
    }
  });

  it('does not mutate the packet it encodes', () => {
    const p = decodePacket(readVector('job_request'));
    const before = Object.keys(p.payload.case === 'jobRequest' ? p.payload.value.labels : {});
    const copy = decodePacket(readVector('job_request'));
    encodePacket(p);
    expect(equals(BusPacketSchema, p, copy)).toBe(true);
    expect(Object.keys(p.payload.case === 'jobRequest' ? p.payload.value.labels : {})).toEqual(before);
  });

  it('keeps unknown fields through a decode/encode round trip', () => {
    const unknown = Buffer.from('fa0103616263', 'hex'); // field 31, LEN "abc"
    const bytes = Buffer.concat([Buffer.from(readVector('job_cancel')), unknown]);
    const again = encodePacket(decodePacket(bytes));
    expect(Buffer.from(again).includes(unknown)).toBe(true);
  });
});

describe('decodePacket', () => {
  it('throws ProtocolError decode_failed on garbage', () => {
    expect(codeOf(() => decodePacket(new Uint8Array([0x0a, 0x09, 0x61])))?.code).toBe('decode_failed');
    expect(codeOf(() => decodePacket(new Uint8Array([0xff, 0xff, 0xff])))?.code).toBe('decode_failed');
  });
});

describe('newPacket', () => {
  it('sets version 1, created_at now, sender, payload and a trace id', () => {
    const before = Date.now();
    const p = newPacket('w-1', { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'w-1' }) });
    expect(p.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(p.senderId).toBe('w-1');
    expect(p.traceId).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.createdAt && timestampMs(p.createdAt)).toBeGreaterThanOrEqual(before - 1);
    expect(p.createdAt && timestampMs(p.createdAt)).toBeLessThanOrEqual(Date.now());
    expect(newPacket('w', { case: undefined }, '').traceId).toBe('');
    expect(newPacket('w', { case: undefined }, 'given').traceId).toBe('given');
  });
});

describe('validatePacket', () => {
  const req = (topic: string, jobId = 'j1'): BusPacket =>
    newPacket('g', { case: 'jobRequest', value: create(JobRequestSchema, { jobId, topic }) }, 't');

  it('accepts well-formed packets of every payload kind', () => {
    const payloads: BusPacket['payload'][] = [
      { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j', topic: 'job.a.b-c_d' }) },
      { case: 'jobResult', value: create(JobResultSchema, { jobId: 'j' }) },
      { case: 'jobProgress', value: create(JobProgressSchema, { jobId: 'j' }) },
      { case: 'jobCancel', value: create(JobCancelSchema, { jobId: 'j' }) },
      { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'w' }) },
      { case: 'handshake', value: create(HandshakeSchema, { componentId: 'w' }) },
      { case: 'alert', value: create(SystemAlertSchema, { message: 'm' }) },
    ];
    for (const payload of payloads) expect(() => validatePacket(newPacket('s', payload, 't'))).not.toThrow();
  });

  it.each([
    ['job'],
    ['job.'],
    ['jobs.x'],
    ['job..x'],
    ['job.x.'],
    ['job.x y'],
    ['sys.job.submit'],
    ['job.ä'],
    [`job.${'x'.repeat(252)}`],
  ])('rejects job topic %j', (topic) => {
    const err = codeOf(() => validatePacket(req(topic)));
    expect(err?.code).toBe('invalid_packet');
    expect(err?.message).toMatch(/topic/);
  });

  it('accepts a topic of exactly 255 characters', () => {
    expect(() => validatePacket(req(`job.${'x'.repeat(251)}`))).not.toThrow();
  });

  it.each<[string, BusPacket['payload'], RegExp]>([
    ['job_request without job_id', { case: 'jobRequest', value: create(JobRequestSchema, { topic: 'job.x' }) }, /job_id/],
    ['job_result without job_id', { case: 'jobResult', value: create(JobResultSchema, {}) }, /job_id/],
    ['job_progress without job_id', { case: 'jobProgress', value: create(JobProgressSchema, {}) }, /job_id/],
    ['job_cancel without job_id', { case: 'jobCancel', value: create(JobCancelSchema, {}) }, /job_id/],
    ['heartbeat without worker_id', { case: 'heartbeat', value: create(HeartbeatSchema, {}) }, /worker_id/],
    ['handshake without component_id', { case: 'handshake', value: create(HandshakeSchema, {}) }, /component_id/],
    ['no payload', { case: undefined }, /no payload/],
    // P302: braces move the keys built from the id (job:meta:{<id>}) to other Redis Cluster slots
    ['job_request with a brace in job_id', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: '}x', topic: 'job.x' }) }, /job_id "\}x" does not match/],
    ['job_result with a brace in job_id', { case: 'jobResult', value: create(JobResultSchema, { jobId: 'a{b}' }) }, /job_id/],
    ['job_progress with a space in job_id', { case: 'jobProgress', value: create(JobProgressSchema, { jobId: 'a b' }) }, /job_id/],
    ['job_cancel with a 129-character job_id', { case: 'jobCancel', value: create(JobCancelSchema, { jobId: 'x'.repeat(129) }) }, /job_id/],
    // P309: labels go twice into a dispatch, which must fit NATS's max_payload
    ['job_request with labels over MAX_LABEL_BYTES', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j1', topic: 'job.x', labels: { a: '界'.repeat(21_845), b: '' } }) }, /labels take 65537 bytes \(UTF-8 keys and values\), more than 65536/],
    ['job_request with meta.labels over MAX_LABEL_BYTES', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j1', topic: 'job.x', meta: { labels: { k: 'x'.repeat(65_536) } } }) }, /meta\.labels take 65537 bytes/],
  ])('rejects %s with a readable message', (_name, payload, message) => {
    const err = codeOf(() => validatePacket(newPacket('sender-9', payload, 't')));
    expect(err?.code).toBe('invalid_packet');
    expect(err?.message).toMatch(message);
    expect(err?.message).toContain('sender-9');
  });

  it('accepts labels of exactly MAX_LABEL_BYTES (P309)', () => {
    const at = newPacket('w', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: 'j1', topic: 'job.x', labels: { a: '界'.repeat(21_845) }, meta: { labels: { a: '界'.repeat(21_845) } } }) }, 't');
    expect(() => validatePacket(at)).not.toThrow();
  });

  it('requires protocol_version 1, except 0 from old heartbeat senders', () => {
    const hb = newPacket('w', { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'w' }) }, '');
    hb.protocolVersion = 0;
    expect(() => validatePacket(hb)).not.toThrow();
    hb.protocolVersion = 2;
    expect(codeOf(() => validatePacket(hb))?.message).toMatch(/protocol_version 2/);

    const r = req('job.x');
    r.protocolVersion = 0;
    expect(codeOf(() => validatePacket(r))?.code).toBe('invalid_packet');
  });

  it('accepts an empty trace_id only on heartbeats', () => {
    expect(() =>
      validatePacket(newPacket('w', { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'w' }) }, '')),
    ).not.toThrow();
    const r = req('job.x');
    r.traceId = '';
    expect(codeOf(() => validatePacket(r))?.message).toMatch(/trace_id/);
  });
});
