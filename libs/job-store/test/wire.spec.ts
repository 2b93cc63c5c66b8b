import { isDeepStrictEqual } from 'node:util';
import { JobRequestSchema, JobStatus, create, decodePacket, encodePacket, newPacket, type JobRequest } from '@cordum/protocol';
import { JOB_STATES, STATE_STATUS, checkRequestOf, checkRequestOfPacket, encodeStatePacket, submitRequestInit, type JobRecord } from '../src';

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

describe('checkRequestOfPacket (the scheduler\'s early Check, issue 7)', () => {
  const full: JobRecord = {
    id: 'job-9', tenant: 'acme', topic: 'job.deploy', state: 'PENDING', traceId: 't-9', priority: 'critical', labels: { env: 'prod', team: 'core' },
    attempts: 0, contextPtr: 'redis://ctx:job-9', principalId: 'alice', actorId: 'bot-1', actorType: 'service', idempotencyKey: 'k-1', capability: 'deploy',
    riskTags: ['prod', 'write'], requires: ['gpu'], memoryId: 'm-1', createdAt: 1, updatedAt: 1,
  };
  const bare: JobRecord = { ...full, priority: 'interactive', labels: {}, actorId: undefined, actorType: undefined, idempotencyKey: undefined, capability: undefined, riskTags: [], requires: [], memoryId: undefined };

  /** The submit packet as the gateway publishes it (encodeJobRequest), through the wire and back. */
  const packetOf = (job: JobRecord): JobRequest => {
    const p = decodePacket(encodePacket(newPacket('gw', { case: 'jobRequest', value: create(JobRequestSchema, submitRequestInit(job, 5_000)) }, job.traceId)));
    if (p.payload.case !== 'jobRequest') throw new Error('not a job request');
    return p.payload.value;
  };

  it('asks exactly what the record asks when the packet is the gateway\'s, whatever order the labels come in', () => {
    for (const job of [full, bare]) expect(isDeepStrictEqual(checkRequestOfPacket(packetOf(job)), checkRequestOf(job))).toBe(true);
    const reordered = { ...full, labels: { team: 'core', env: 'prod' } };
    expect(isDeepStrictEqual(checkRequestOfPacket(packetOf(full)), checkRequestOf(reordered))).toBe(true);
  });

  it('differs from the record\'s request when any field Check sees differs in the packet', () => {
    const changes: Partial<JobRecord>[] = [
      { topic: 'job.other' }, { tenant: 'globex' }, { priority: 'batch' }, { principalId: 'mallory' }, { labels: { env: 'dev', team: 'core' } },
      { labels: { env: 'prod', team: 'core', extra: '1' } }, { labels: { env: 'prod' } }, { memoryId: 'm-2' }, { actorId: 'bot-2' }, { actorType: 'human' },
      { idempotencyKey: 'k-2' }, { capability: 'read' }, { riskTags: ['prod'] }, { riskTags: ['write', 'prod'] }, { requires: [] }, { id: 'job-10' },
    ];
    for (const change of changes) {
      const same = isDeepStrictEqual(checkRequestOfPacket(packetOf({ ...full, ...change })), checkRequestOf(full));
      expect({ change, same }).toEqual({ change, same: false });
    }
  });
});
