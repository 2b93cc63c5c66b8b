// CONTRACT §3 "verifying is optional per deployment" (decisions.md P61), with real processes
// and one key pair: the scheduler verifies what workers send and signs its job requests, the
// gateway signs its cancels, the echo worker signs what it sends and verifies requests and
// cancels. A worker without the key is never registered (its heartbeats are refused), an
// unsigned result is terminated and counted, never applied, and a forged request never runs.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { JobRequestSchema, JobResultSchema, JobStatus, create, encodePacket, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { api, quietLog, stackMetric, startStack, type Stack } from './stack';

let stack: Stack;
let bus: Bus;
const dir = mkdtempSync(join(tmpdir(), 'cordum-keys-'));

const schedulerMetric = (name: string, subject: string): Promise<number> => stackMetric(stack, 'scheduler-1', name, { subject });

beforeAll(async () => {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(join(dir, 'cap.pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(join(dir, 'cap.key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const keys = { CAP_VERIFY_KEY_FILE: join(dir, 'cap.pub.pem'), CAP_SIGNING_KEY_FILE: join(dir, 'cap.key.pem') };
  stack = await startStack({
    workers: 1,
    schedulerEnv: keys,
    gatewayEnv: { CAP_SIGNING_KEY_FILE: keys.CAP_SIGNING_KEY_FILE },
    // long enough to cancel a job while it runs
    workerEnv: { ...keys, WORKER_ECHO_DELAY: '2s' },
  });
  bus = await connectBus({ servers: stack.natsUrls, name: 'signed-spec', logger: quietLog });
}, 180_000);
afterAll(async () => {
  await bus?.close();
  await stack?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it('a worker that signs registers and runs jobs; one that does not is never routed to; an unsigned result is never applied', async () => {
  const signed = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'signed' })).body['job_id']);
  await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${signed}`)).body['state'] === 'SUCCEEDED', 30_000, { message: 'job on the signing worker SUCCEEDED', intervalMs: 100 });
  expect(stack.executions().get(signed)).toBe(1);

  const refusedBefore = await schedulerMetric('cordum_scheduler_decode_errors_total', subjects.heartbeat);
  await stack.spawnWorker('echo-unsigned', { CAP_SIGNING_KEY_FILE: '', CAP_VERIFY_KEY_FILE: '', WORKER_TOPICS: 'job.unsigned' });
  // its handshake and heartbeats reach the scheduler and are refused
  await waitFor(async () => (await schedulerMetric('cordum_scheduler_decode_errors_total', subjects.heartbeat)) > refusedBefore, 15_000, { message: 'unsigned heartbeat refused', intervalMs: 200 });
  const unsigned = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.unsigned', prompt: 'nobody may run this' })).body['job_id']);
  // a forged, unsigned SUCCEEDED result for it: terminated after 3 deliveries, counted
  const forgedBefore = await schedulerMetric('cordum_bus_undecodable_total', subjects.result);
  const forged = create(JobResultSchema, { jobId: unsigned, status: JobStatus.SUCCEEDED, workerId: 'echo-unsigned' });
  await bus.publish(subjects.result, encodePacket(newPacket('echo-unsigned', { case: 'jobResult', value: forged })), { msgId: `forged:${unsigned}` });
  await waitFor(async () => (await schedulerMetric('cordum_bus_undecodable_total', subjects.result)) > forgedBefore, 10_000, { message: 'forged result terminated', intervalMs: 100 });
  // the scheduler still knows no worker for the topic: the job waits, unrun
  const job = (await api(stack, 'GET', `/api/v1/jobs/${unsigned}`)).body;
  expect(['PENDING', 'SCHEDULED']).toContain(job['state']);
  expect(stack.executions().get(unsigned)).toBeUndefined();
  const workers = (await api(stack, 'GET', '/api/v1/workers')).body['items'] as { worker_id: string }[];
  expect(workers.map((w) => w.worker_id)).not.toContain('echo-unsigned');
}, 90_000);

it('the worker runs only signed requests, and takes the signed cancel of the gateway', async () => {
  // a forged, unsigned request on the worker's direct subject: dropped, never run
  const forged = create(JobRequestSchema, { jobId: 'forged-job-1', topic: 'job.echo', dispatch: { dispatchId: 'd-forged', attempt: 1n } });
  bus.publishCore('worker.echo-1.jobs', encodePacket(newPacket('scheduler-1', { case: 'jobRequest', value: forged })));
  const dropped = () => stack.grepLogs('dropping undecodable packet').filter((l) => l.startsWith('echo-1:') && l.includes('signature does not verify'));
  await waitFor(() => dropped().length > 0, 10_000, { message: 'forged request dropped', intervalMs: 100 });
  expect(stack.executions().get('forged-job-1')).toBeUndefined();

  // a signed cancel from the gateway reaches the worker and stops the running job
  const id = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'stop me' })).body['job_id']);
  await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'RUNNING', 15_000, { message: 'RUNNING', intervalMs: 50 });
  expect((await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'signed stop' })).status).toBe(200);
  await waitFor(() => stack.grepLogs('job cancel received').some((l) => l.startsWith('echo-1:') && l.includes(id)), 5_000, { message: 'worker took the signed cancel', intervalMs: 50 });
});
