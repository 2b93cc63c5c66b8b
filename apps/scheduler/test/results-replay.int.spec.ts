// P197: with CAP_VERIFY_KEY_FILE, a signed result without a dispatch id (CAP SDK workers send none;
// CONTRACT §3 applies it to the current attempt) that is published again, byte for byte, is not
// applied to a later attempt. The replay needs no key: it is a capture of a real answer, published
// again with a new stream sequence and no msg id, which P41's sequence guard lets through. In
// process against real Redis + NATS, with one key pair for the scheduler and the test worker.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import type { JobRecord } from '@cordum/job-store';
import { create, decodePacket, encodeLenField, encodePacket, HeartbeatSchema, JobResultSchema, JobStatus, newPacket, SIGNATURE_FIELD, signedBytes, signPacket, verifyPacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker;
let dir: string;
const logs: string[] = [];
const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'replay-keys-'));
  writeFileSync(join(dir, 'cap.pub.pem'), keys.publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(join(dir, 'cap.key.pem'), keys.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  kernel = await startTestKernel([]);
  rig = await startSchedulerRig({
    instanceId: 'sched-replay',
    kernelAddress: kernel.address,
    logger: createLogger({ service: 'scheduler', instance: 'sched-replay', level: 'warn', write: (l) => void logs.push(l) }),
    env: { CAP_VERIFY_KEY_FILE: join(dir, 'cap.pub.pem'), CAP_SIGNING_KEY_FILE: join(dir, 'cap.key.pem') },
  });
  // Starts each attempt (a signed progress) and never answers by itself.
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-replay', topics: ['job.replay'], replyFor: () => 'none', signingKey: keys.privateKey });
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-replay' && v.readyTopics.length > 0), 10_000, { message: 'signed worker registered' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** P-256's group order n. */
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The DER signature (field 14) of a signed packet. */
const signatureOf = (bytes: Uint8Array): Uint8Array => decodePacket(bytes).signature;

/** DER `SEQUENCE { INTEGER r, INTEGER n − s }` from DER `SEQUENCE { INTEGER r, INTEGER s }` (short-form lengths, as P-256's are). */
function twinSignature(der: Uint8Array): Uint8Array {
  const rLen = der[3]!;
  const r = der.subarray(4, 4 + rLen);
  const sLen = der[5 + rLen]!;
  const s = BigInt(`0x${Buffer.from(der.subarray(6 + rLen, 6 + rLen + sLen)).toString('hex')}`);
  let hex = (N - s).toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  let s2 = Buffer.from(hex, 'hex');
  if (s2[0]! & 0x80) s2 = Buffer.concat([Buffer.from([0]), s2]);
  const body = Buffer.concat([Buffer.from([0x02, r.length]), r, Buffer.from([0x02, s2.length]), s2]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

const runningOn = (id: string, attempt: number) => async (): Promise<JobRecord | null> => {
  const j = await rig.job(id);
  return j.state === 'RUNNING' && j.attempts === attempt ? j : null;
};

it('a signed anonymous result published again, as is or with its twin signature, is ignored as replayed; a new signed answer still applies', async () => {
  const id = `replay-${process.pid}`;
  await rig.submit(id, 'job.replay');
  await waitFor(runningOn(id, 1), 10_000, { message: 'attempt 1 RUNNING' });

  // The worker's answer to attempt 1: retryable, signed, without `dispatch`.
  const answer = (message: string) =>
    signPacket(newPacket(worker.id, { case: 'jobResult', value: create(JobResultSchema, { jobId: id, status: JobStatus.FAILED_RETRYABLE, workerId: worker.id, errorCode: 'flaky', errorMessage: message }) }), keys.privateKey);
  const captured = answer('try again');
  await rig.bus.publish(subjects.result, captured);
  await waitFor(runningOn(id, 2), 10_000, { message: 'attempt 2 RUNNING (the retry of attempt 1)' });

  // The same bytes again, while attempt 2 runs: before P197 they applied to attempt 2 and started attempt 3.
  const before = await rig.counter('cordum_scheduler_ignored_packets_total', { reason: 'replayed' });
  await rig.bus.publish(subjects.result, captured);
  await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { reason: 'replayed' })) > before, 10_000, { message: 'the replay ignored' });
  expect(await rig.job(id)).toMatchObject({ state: 'RUNNING', attempts: 2 });
  // ...and with the signature's twin (r, n − s), which verifies too and needs no key.
  const twin = concat(signedBytes(captured), encodeLenField(SIGNATURE_FIELD, twinSignature(signatureOf(captured))));
  expect(verifyPacket(twin, keys.publicKey)).toBe(true);
  await rig.bus.publish(subjects.result, twin);
  await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { reason: 'replayed' })) > before + 1, 10_000, { message: 'the twin ignored' });
  expect(await rig.job(id)).toMatchObject({ state: 'RUNNING', attempts: 2 });

  // The worker's own next answer (new bytes, a new signature) applies as usual: attempt 3, the last.
  await rig.bus.publish(subjects.result, answer('still flaky'));
  const third = await waitFor(runningOn(id, 3), 10_000, { message: 'attempt 3 RUNNING' });
  expect(third.resultSigs).toHaveLength(2);
});

it('a heartbeat a verifying scheduler refuses is logged once, naming its sender, and the worker is not routable (P220)', async () => {
  const unsigned = (id: string) => encodePacket(newPacket(id, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: id, pool: 'default', maxParallelJobs: 4, activeJobs: 0 }) }));
  const refused = (l: string) => l.includes('"msg":"worker packet refused; the worker is not routable until its packets are accepted"') && l.includes('"sender_id":"tw-unsigned"');
  rig.bus.publishCore(subjects.heartbeat, unsigned('tw-unsigned'));
  await waitFor(() => logs.some(refused), 5_000, { message: 'refusal logged' });
  for (let i = 0; i < 5; i++) rig.bus.publishCore(subjects.heartbeat, unsigned('tw-unsigned'));
  // A barrier: a refused heartbeat from another sender, logged after the five above were handled.
  rig.bus.publishCore(subjects.heartbeat, unsigned('tw-unsigned-2'));
  await waitFor(() => logs.some((l) => l.includes('"sender_id":"tw-unsigned-2"')), 5_000, { message: 'second sender logged' });
  expect(logs.filter(refused)).toHaveLength(1);
  expect(logs.filter(refused)[0]).toContain('signature');
  expect(rig.scheduler.workers.live().some((w) => w.workerId === 'tw-unsigned')).toBe(false);
});

it('a signed heartbeat published again does not keep its worker alive; the worker\'s next one does (P243)', async () => {
  const id = 'tw-replayed-hb';
  const beat = (workerId: string) =>
    signPacket(newPacket(workerId, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId, pool: 'default', maxParallelJobs: 4, activeJobs: 0 }) }), keys.privateKey);
  const seen = (workerId: string) => rig.scheduler.workers.all().find((w) => w.workerId === workerId)?.lastHeartbeat;
  const captured = beat(id);
  rig.bus.publishCore(subjects.heartbeat, captured);
  const first = await waitFor(() => seen(id), 5_000, { message: 'the worker registered' });
  const before = await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'heartbeat', reason: 'replayed' });
  // Later, the capture again (as is, and with its twin signature), then a barrier: another worker's heartbeat.
  await waitFor(() => Date.now() > first + 5, 1_000);
  rig.bus.publishCore(subjects.heartbeat, captured);
  rig.bus.publishCore(subjects.heartbeat, concat(signedBytes(captured), encodeLenField(SIGNATURE_FIELD, twinSignature(signatureOf(captured)))));
  rig.bus.publishCore(subjects.heartbeat, beat('tw-replayed-hb-barrier'));
  await waitFor(() => seen('tw-replayed-hb-barrier'), 5_000, { message: 'the barrier heartbeat applied' });
  expect(seen(id)).toBe(first);
  expect(await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'heartbeat', reason: 'replayed' })).toBe(before + 2);
  expect(logs.filter((l) => l.includes('worker heartbeat not newer than its last one ignored') && l.includes(`"worker_id":"${id}"`))).toHaveLength(1);
  // The worker's own next heartbeat (a later created_at) applies.
  await waitFor(() => Date.now() > first + 10, 1_000);
  rig.bus.publishCore(subjects.heartbeat, beat(id));
  await waitFor(() => (seen(id) ?? 0) > first, 5_000, { message: 'the next heartbeat applied' });

  // A signed heartbeat without created_at (validation does not require one) is not checked: its
  // worker's every heartbeat applies, not only the first.
  const untimed = (): Uint8Array => {
    const p = newPacket('tw-untimed', { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: 'tw-untimed', pool: 'default', maxParallelJobs: 4, activeJobs: 0 }) });
    p.createdAt = undefined;
    return signPacket(p, keys.privateKey);
  };
  rig.bus.publishCore(subjects.heartbeat, untimed());
  const once = await waitFor(() => seen('tw-untimed'), 5_000, { message: 'the untimed worker registered' });
  await waitFor(() => Date.now() > once + 5, 1_000);
  rig.bus.publishCore(subjects.heartbeat, untimed());
  await waitFor(() => (seen('tw-untimed') ?? 0) > once, 5_000, { message: 'its second heartbeat applied' });
});
