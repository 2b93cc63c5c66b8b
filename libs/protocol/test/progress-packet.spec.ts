import { BusPacketSchema, JobProgressSchema, JobStatus, PROTOCOL_VERSION, create, decodePacket, encodePacket, encodeProgressPacket, timestampFromMs, type ProgressPacketFields } from '../src';

/** The reflective encoding of the same packet: what the hand encoder must match byte for byte. */
function reference(f: ProgressPacketFields): Uint8Array {
  return encodePacket(create(BusPacketSchema, {
    traceId: f.traceId,
    senderId: f.senderId,
    createdAt: timestampFromMs(f.createdAtMs),
    protocolVersion: PROTOCOL_VERSION,
    payload: { case: 'jobProgress', value: create(JobProgressSchema, { jobId: f.jobId, status: f.status, message: f.message }) },
  }));
}

const base: ProgressPacketFields = {
  traceId: '7c8f7c1e-1111-4222-8333-944455556666',
  senderId: 'scheduler-1',
  createdAtMs: 1_764_550_000_123,
  jobId: '5b8f7c1e-1111-4222-8333-944455556666',
  status: JobStatus.DISPATCHED,
  message: 'DISPATCHED',
};

describe('encodeProgressPacket', () => {
  const cases: Array<[string, Partial<ProgressPacketFields>]> = [
    ['a typical state packet', {}],
    ['an empty trace id (field left out)', { traceId: '' }],
    ['an empty sender, job id and message', { senderId: '', jobId: '', message: '' }],
    ['status UNSPECIFIED (left out)', { status: JobStatus.UNSPECIFIED }],
    ['the highest status', { status: JobStatus.FAILED_FATAL }],
    ['a whole second (nanos left out)', { createdAtMs: 1_764_550_000_000 }],
    ['the epoch (an empty Timestamp)', { createdAtMs: 0 }],
    ['under a second after the epoch (seconds left out)', { createdAtMs: 999 }],
    ['multi-byte UTF-8 in every string', { traceId: 'trace-ü-✓', senderId: 'sched-日本', jobId: 'job-🚀', message: 'état' }],
    ['a 200-byte job id (two-byte length)', { jobId: 'j'.repeat(200) }],
    ['a 20,000-byte message (three-byte lengths, nested too)', { message: 'm'.repeat(20_000) }],
  ];

  it.each(cases)('writes the same bytes as encodePacket: %s', (_name, patch) => {
    const f = { ...base, ...patch };
    expect(Buffer.from(encodeProgressPacket(f)).equals(Buffer.from(reference(f)))).toBe(true);
  });

  it('matches for every JobStatus value', () => {
    for (const status of Object.values(JobStatus).filter((v): v is JobStatus => typeof v === 'number')) {
      const f = { ...base, status };
      expect(Buffer.from(encodeProgressPacket(f)).equals(Buffer.from(reference(f)))).toBe(true);
    }
  });

  it('decodes back to the fields it was given', () => {
    const p = decodePacket(encodeProgressPacket(base));
    expect(p.traceId).toBe(base.traceId);
    expect(p.senderId).toBe(base.senderId);
    expect(p.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(Number(p.createdAt?.seconds) * 1000 + (p.createdAt?.nanos ?? 0) / 1e6).toBe(base.createdAtMs);
    expect(p.payload.case).toBe('jobProgress');
    if (p.payload.case !== 'jobProgress') return;
    expect(p.payload.value.jobId).toBe(base.jobId);
    expect(p.payload.value.status).toBe(JobStatus.DISPATCHED);
    expect(p.payload.value.message).toBe('DISPATCHED');
  });

  it('refuses a created_at that is not a whole, non-negative number of milliseconds', () => {
    for (const createdAtMs of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => encodeProgressPacket({ ...base, createdAtMs })).toThrow(RangeError);
    }
  });
});
