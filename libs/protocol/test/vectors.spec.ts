import {
  ActorType,
  AlertSeverity,
  ComponentRole,
  JobPriority,
  JobStatus,
  decodePacket,
  encodeForSigning,
  encodePacket,
  equals,
  BusPacketSchema,
  signedBytes,
  timestampMs,
  validatePacket,
  verifyPacket,
} from '../src';
import type { BusPacket } from '../src';
import { VECTOR_NAMES, readPublicKeyPem, readVector } from './fixtures';
import type { VectorName } from './fixtures';

const CREATED_AT_MS = Date.parse('2024-01-02T03:04:05Z');

type Payload = BusPacket['payload'];
type PayloadValue<C> = Extract<Payload, { case: C }> extends { value: infer V } ? V : never;

function payloadOf<C extends NonNullable<Payload['case']>>(p: BusPacket, c: C): PayloadValue<C> {
  expect(p.payload.case).toBe(c);
  return p.payload.value as PayloadValue<C>;
}

const expectations: Record<VectorName, (p: BusPacket) => void> = {
  job_request: (p) => {
    expect(p.traceId).toBe('trace-job-request');
    expect(p.senderId).toBe('client-1');
    const r = payloadOf(p, 'jobRequest');
    expect(r.jobId).toBe('job-req-1');
    expect(r.topic).toBe('job.tools');
    expect(r.priority).toBe(JobPriority.INTERACTIVE);
    expect(r.contextPtr).toBe('redis://ctx:job-req-1');
    expect(r.adapterId).toBe('adapter-default');
    expect(r.env).toEqual({ region: 'us-east-1', sandbox: 'true' });
    expect(r.parentJobId).toBe('parent-0');
    expect(r.workflowId).toBe('wf-1');
    expect(r.stepIndex).toBe(2);
    expect(r.memoryId).toBe('mem-abc');
    expect(r.tenantId).toBe('tenant-1');
    expect(r.principalId).toBe('user-99');
    expect(r.labels).toEqual({ env: 'prod', team: 'platform' });
    expect(r.contextHints).toMatchObject({ maxInputTokens: 2048, allowSummarization: true, allowRetrieval: true, tags: ['repo', 'docs'] });
    expect(r.budget).toMatchObject({ maxInputTokens: 4000n, maxOutputTokens: 1000n, maxTotalTokens: 5000n, deadlineMs: 60000n });
    expect(r.meta).toMatchObject({
      tenantId: 'tenant-1',
      actorId: 'user-99',
      actorType: ActorType.HUMAN,
      idempotencyKey: 'idem-123',
      capability: 'repo.review',
      riskTags: ['code', 'secrets'],
      requires: ['git', 'network-egress'],
      packId: 'pack-1',
      labels: { source: 'conformance' },
    });
    expect(r.compensation).toMatchObject({
      topic: 'job.rollback',
      priority: JobPriority.BATCH,
      principalId: 'svc-1',
      labels: { rollback: 'true' },
    });
    expect(r.compensation?.meta?.actorType).toBe(ActorType.SERVICE);
    expect(r.compensation?.budget?.deadlineMs).toBe(120000n);
  },
  job_result: (p) => {
    expect(p.senderId).toBe('worker-1');
    const r = payloadOf(p, 'jobResult');
    expect(r.jobId).toBe('job-res-1');
    expect(r.status).toBe(JobStatus.FAILED_RETRYABLE);
    expect(r.status).toBe(10);
    expect(r.resultPtr).toBe('redis://res:job-res-1');
    expect(r.workerId).toBe('worker-1');
    expect(r.executionMs).toBe(1234n);
    expect(r.errorCode).toBe('E_TEMP');
    expect(r.errorMessage).toBe('temporary failure');
    expect(r.artifactPtrs).toEqual(['redis://art:log-1', 'redis://art:diff-2']);
    expect(r.dispatch).toBeUndefined();
  },
  job_progress: (p) => {
    const r = payloadOf(p, 'jobProgress');
    expect(r).toMatchObject({
      jobId: 'job-prog-1',
      stepId: 'step-2',
      percent: 50,
      message: 'halfway',
      resultPtr: 'redis://res:job-prog-1',
      artifactPtrs: ['redis://art:partial-1'],
      status: JobStatus.RUNNING,
    });
  },
  job_cancel: (p) => {
    expect(p.senderId).toBe('scheduler-1');
    expect(payloadOf(p, 'jobCancel')).toMatchObject({ jobId: 'job-cancel-1', reason: 'user_request', requestedBy: 'user-7' });
  },
  heartbeat: (p) => {
    const h = payloadOf(p, 'heartbeat');
    expect(h).toMatchObject({
      workerId: 'worker-1',
      region: 'us-east-1',
      type: 'cpu-tools',
      cpuLoad: 33.5,
      activeJobs: 2,
      capabilities: ['git', 'docker'],
      pool: 'job.tools',
      maxParallelJobs: 4,
      labels: { env: 'prod', zone: 'us-east-1a' },
      progressPct: 60,
      lastMemo: 'step-3',
    });
    expect(h.memoryLoad).toBeCloseTo(45.2, 5);
  },
  handshake: (p) => {
    const h = payloadOf(p, 'handshake');
    expect(h.componentId).toBe('worker-1');
    expect(h.role).toBe(ComponentRole.WORKER);
    expect(h.supportedVersions).toEqual([1]);
    expect(h.capabilities).toEqual({ cancel: true, compensation: false, progress: true, signatures: true });
    expect(h.sdkVersion).toBe('2.0.19');
  },
  alert: (p) => {
    expect(payloadOf(p, 'alert')).toMatchObject({
      level: 'WARN',
      message: 'high queue depth',
      component: 'scheduler',
      code: 'QUEUE_DEPTH',
      severity: AlertSeverity.UNSPECIFIED,
    });
  },
  alert_enhanced: (p) => {
    const a = payloadOf(p, 'alert');
    expect(a).toMatchObject({
      level: 'CRITICAL',
      message: 'invalid signature from worker',
      code: 'SIGNATURE_INVALID',
      severity: AlertSeverity.CRITICAL,
      errorCodeEnum: 103,
      sourceComponent: 'scheduler-1',
      details: { sender: 'worker-bad', subject: 'sys.job.result' },
      traceId: 'trace-offending-packet',
    });
  },
};

describe('CAP reference vectors', () => {
  const pem = readPublicKeyPem();

  describe.each(VECTOR_NAMES)('%s', (name) => {
    const bytes = readVector(name);

    it('decodes to the documented fields', () => {
      const p = decodePacket(bytes);
      expect(p.protocolVersion).toBe(1);
      expect(p.traceId).not.toBe('');
      expect(p.createdAt && timestampMs(p.createdAt)).toBe(CREATED_AT_MS);
      expect(p.signature.length).toBeGreaterThan(60); // DER P-256 signature is 70-72 bytes
      expectations[name](p);
      expect(() => validatePacket(p)).not.toThrow();
    });

    it('re-encodes and decodes to an equal packet', () => {
      const p = decodePacket(bytes);
      const again = decodePacket(encodePacket(p));
      expect(equals(BusPacketSchema, again, p)).toBe(true);
      expectations[name](again);
    });

    it('our deterministic encoding matches the reference bytes without field 14', () => {
      expect(Buffer.from(encodeForSigning(decodePacket(bytes)))).toEqual(Buffer.from(signedBytes(bytes)));
    });

    it('verifies against public_key.pem', () => {
      expect(verifyPacket(bytes, pem)).toBe(true);
    });

    it('fails verification when a covered byte or the signature is flipped', () => {
      const p = decodePacket(bytes);
      // The last byte of sender_id: covered by the signature, and flipping its
      // low bit keeps the packet decodable (ASCII stays ASCII).
      const sender = new TextEncoder().encode(p.senderId);
      const covered = indexOfSubarray(bytes, sender) + sender.length - 1;
      const tampered = Uint8Array.from(bytes);
      tampered[covered] = (tampered[covered] as number) ^ 0x01;
      expect(decodePacket(tampered).senderId).not.toBe(p.senderId);
      expect(verifyPacket(tampered, pem)).toBe(false);

      const sigLast = indexOfSubarray(bytes, p.signature) + p.signature.length - 1;
      const badSig = Uint8Array.from(bytes);
      badSig[sigLast] = (badSig[sigLast] as number) ^ 0x01;
      expect(verifyPacket(badSig, pem)).toBe(false);
    });
  });
});

function indexOfSubarray(hay: Uint8Array, needle: Uint8Array): number {
  const i = Buffer.from(hay).indexOf(Buffer.from(needle));
  if (i < 0) throw new Error('needle not found');
  return i;
}

