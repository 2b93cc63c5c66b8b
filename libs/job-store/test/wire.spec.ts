import { JobStatus, decodePacket, encodePacket } from '@cordum/protocol';
import { JOB_STATES, STATE_STATUS, dlqMsgId, dlqPacket, encodeStatePacket, type DlqEntry, type JobRecord } from '../src';

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

describe('dlqPacket (sys.job.dlq, D14)', () => {
  const job: JobRecord = {
    id: 'job-9', tenant: 'acme', topic: 'job.echo', state: 'FAILED', traceId: 'trace-9', priority: 'batch', labels: {}, principalId: 'p', riskTags: [], requires: [],
    attempts: 2, contextPtr: 'redis://ctx:job-9', workerId: 'w-3', createdAt: 1, updatedAt: 2,
    dispatch: { dispatchId: 'd-2', attempt: 2, published: true, subject: 'worker.w-3.jobs', workerId: 'w-3' },
  };
  const entry: DlqEntry = { job_id: 'job-9', tenant: 'acme', topic: 'job.echo', reason: 'boom', reason_code: 'max_attempts', last_state: 'FAILED', attempts: 2, created_at: '2026-12-02T00:00:00.000Z' };

  it('is a JobResult with error_code = the entry reason code, the state as JobStatus and the attempt', () => {
    const p = decodePacket(encodePacket(dlqPacket('scheduler-2', job, entry)));
    expect(p.senderId).toBe('scheduler-2');
    expect(p.traceId).toBe('trace-9');
    if (p.payload.case !== 'jobResult') throw new Error(`payload ${p.payload.case}`);
    expect(p.payload.value).toMatchObject({ jobId: 'job-9', status: JobStatus.FAILED, errorCode: 'max_attempts', errorMessage: 'boom', workerId: 'w-3' });
    expect(p.payload.value.dispatch).toMatchObject({ dispatchId: 'd-2', attempt: 2n, assignedWorkerId: 'w-3' });
  });

  it('has a D9-style message id per job and attempt, and none of a dispatch for a job denied before one', () => {
    expect(dlqMsgId(job)).toBe('sys.job.dlq:job-9:d-2');
    const { dispatch: _d, ...denied } = { ...job, state: 'DENIED' as const };
    expect(dlqMsgId(denied)).toBe('sys.job.dlq:job-9:');
    const p = decodePacket(encodePacket(dlqPacket('gw', denied, { ...entry, reason_code: 'policy_denied' })));
    if (p.payload.case !== 'jobResult') throw new Error(`payload ${p.payload.case}`);
    expect(p.payload.value.dispatch).toBeUndefined();
    expect(p.payload.value.status).toBe(JobStatus.DENIED);
  });
});
