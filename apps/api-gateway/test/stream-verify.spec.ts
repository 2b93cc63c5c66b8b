// P245: with CAP_VERIFY_KEY_FILE (the workers' public keys) a gateway streams a worker's progress
// only when its packet is signed with one of them. Progress is a worker's word (percent, message)
// shown to people; without this, anything that could publish on sys.job.progress put words in a
// job's stream. State broadcasts (the services' own) are not affected. Real Redis + NATS.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type WebSocket from 'ws';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { JobProgressSchema, JobStatus, create, encodePacket, newPacket, signPacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { KEYS, call, metric } from './harness';
import { startReplicas, type Replicas } from './replicas';
import { openStream } from './stream-client';

const workers = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const stranger = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
let dir: string;
let r: Replicas;
let bus: Bus;
const sockets: WebSocket[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'stream-verify-'));
  writeFileSync(join(dir, 'workers.pub.pem'), workers.publicKey.export({ type: 'spki', format: 'pem' }));
  r = await startReplicas(1, { CAP_VERIFY_KEY_FILE: join(dir, 'workers.pub.pem') });
  bus = await connectBus({ servers: [r.nats.url], name: 'stream-verify-test', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
});

afterAll(async () => {
  for (const s of sockets) s.terminate();
  await bus?.close();
  await r?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('streams a signed progress; drops and counts an unsigned one and one signed with another key', async () => {
  const c = await openStream(r.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream', { headers: { 'X-API-Key': KEYS.operator } }, sockets);
  await waitFor(() => c.events.length > 0, 5_000, { message: 'hello' });
  const jobId = (await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic: 'job.echo' } })).body['job_id'] as string;
  const progress = (message: string) => newPacket('w-1', { case: 'jobProgress', value: create(JobProgressSchema, { jobId, percent: 10, message, status: JobStatus.RUNNING }) });
  bus.publishCore(subjects.progress, encodePacket(progress('forged, unsigned')));
  bus.publishCore(subjects.progress, signPacket(progress('forged, another key'), stranger.privateKey));
  bus.publishCore(subjects.progress, signPacket(progress('from the worker'), workers.privateKey));
  await bus.flush();
  await waitFor(() => c.events.some((e) => e['type'] === 'job.progress'), 5_000, { message: 'the signed progress streamed' });
  // The state broadcasts (unsigned, the services' own) still stream.
  expect(c.events.some((e) => e['type'] === 'job.state' && e['job_id'] === jobId)).toBe(true);
  expect(c.events.filter((e) => e['type'] === 'job.progress').map((e) => e['message'])).toEqual(['from the worker']);
  expect(await metric(r.urls[0]!, 'cordum_ws_events_dropped_total', 'reason="unverified"')).toBe(2);
});
