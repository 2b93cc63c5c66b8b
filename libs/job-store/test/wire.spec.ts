import { JobStatus, decodePacket } from '@cordum/protocol';
import { JOB_STATES, STATE_STATUS, encodeStatePacket } from '../src';

describe('encodeStatePacket (sys.job.state, D15)', () => {
  const job = { id: 'job-1', traceId: 'trace-1' };

  it('carries the job id, the JobStatus and the exact state name of every state, with the job trace id and sender', () => {
    for (const state of JOB_STATES) {
      const p = decodePacket(encodeStatePacket('scheduler-7', { ...job, state }, 1_764_550_000_042));
      expect(p.traceId).toBe('trace-1');
      expect(p.senderId).toBe('scheduler-7');
      expect(p.protocolVersion).toBe(1);
      expect(Number(p.createdAt?.seconds)).toBe(1_764_550_000);
      expect(p.createdAt?.nanos).toBe(42_000_000);
      expect(p.payload.case).toBe('jobProgress');
      if (p.payload.case !== 'jobProgress') continue;
      expect(p.payload.value).toMatchObject({ jobId: 'job-1', message: state, status: STATE_STATUS[state] });
    }
    expect(STATE_STATUS.RETRYING).toBe(JobStatus.FAILED_RETRYABLE);
  });

  it('gives a job without a trace id a fresh one per packet, never an empty field', () => {
    const a = decodePacket(encodeStatePacket('gw', { id: 'job-2', traceId: '', state: 'PENDING' }));
    const b = decodePacket(encodeStatePacket('gw', { id: 'job-2', traceId: '', state: 'PENDING' }));
    expect(a.traceId).toMatch(/^[0-9a-f-]{36}$/);
    expect(b.traceId).not.toBe(a.traceId);
  });

  it('stamps created_at with the current time by default', () => {
    const before = Date.now();
    const p = decodePacket(encodeStatePacket('gw', { ...job, state: 'SUCCEEDED' }));
    const ms = Number(p.createdAt?.seconds) * 1000 + (p.createdAt?.nanos ?? 0) / 1e6;
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(Date.now());
  });
});
