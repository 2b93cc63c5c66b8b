// The built bundle as operators run it: `node dist/apps/echo-worker/main.js`, env only, any cwd.
// Needs `npx nx build echo-worker` first (serviceBundle() says so when it is missing).
import { createLogger } from '@cordum/service-kit';
import { create, decodePacket, DispatchIdentitySchema, encodePacket, JobRequestSchema, newPacket, type Heartbeat } from '@cordum/protocol';
import { freePort, spawnService, startNats, startRedis, waitFor, type ManagedProcess, type TestServer } from '@cordum/testing';
import { connectWorkerRuntime, type WorkerRuntime } from '@cordum/worker-sdk';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let nats: TestServer;
let redisServer: TestServer;
let observer: WorkerRuntime;
let dir: string;
const procs: ManagedProcess[] = [];
const heartbeats: Heartbeat[] = [];

beforeAll(async () => {
  [nats, redisServer] = await Promise.all([startNats(), startRedis()]);
  dir = mkdtempSync(join(tmpdir(), 'echo-proc-'));
  const logger = createLogger({ service: 'echo-proc-test', instance: 'test', level: 'error' });
  observer = await connectWorkerRuntime({ name: 'observer', nats: { servers: [nats.url] }, redis: { url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }, logger });
  observer.bus.subscribe('sys.heartbeat', (d) => {
    const p = decodePacket(d);
    if (p.payload.case === 'heartbeat') heartbeats.push(p.payload.value);
  });
  await observer.bus.flush();
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await observer.close();
  await Promise.all([nats.stop(), redisServer.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

function spawnEcho(env: Record<string, string>): ManagedProcess {
  const p = spawnService('echo-worker', { NATS_URL: nats.url, REDIS_URL: redisServer.url, ...env }, { cwd: tmpdir() });
  procs.push(p);
  return p;
}

test('the bundle heartbeats, is ready, and exits 0 within 15 s of SIGTERM', async () => {
  const port = await freePort();
  const p = spawnEcho({ WORKER_ID: 'echo-proc', WORKER_HEARTBEAT_INTERVAL: '200ms', WORKER_HTTP_ADDR: `127.0.0.1:${port}` });
  const hb = await waitFor(() => heartbeats.find((h) => h.workerId === 'echo-proc'), 15_000, { message: 'heartbeat from the bundle' });
  expect(hb).toMatchObject({ pool: 'default', maxParallelJobs: 32 });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 10_000, { message: '/readyz 200' });
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  expect(metrics).toContain('cordum_worker_executions_total');
  const t0 = Date.now();
  p.kill('SIGTERM');
  const exit = await p.waitExit(15_000);
  expect(exit.code).toBe(0);
  expect(Date.now() - t0).toBeLessThan(15_000);
});

test('the exec log line is on disk before the work, so it survives SIGKILL mid-job', async () => {
  const log = join(dir, 'exec.log');
  const p = spawnEcho({ WORKER_ID: 'echo-kill', WORKER_ECHO_DELAY: '60s', WORKER_EXEC_LOG: log, WORKER_HEARTBEAT_INTERVAL: '200ms' });
  await waitFor(() => heartbeats.find((h) => h.workerId === 'echo-kill'), 15_000);
  const req = create(JobRequestSchema, { jobId: 'killed-job', topic: 'job.echo', dispatch: create(DispatchIdentitySchema, { dispatchId: 'dk', attempt: 1n }) });
  observer.bus.publishCore('worker.echo-kill.jobs', encodePacket(newPacket('test', { case: 'jobRequest', value: req })));
  await observer.bus.flush();
  await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('killed-job'), 10_000, { message: 'exec log line' });
  p.kill('SIGKILL');
  expect((await p.waitExit(5_000)).signal).toBe('SIGKILL');
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  expect(lines.map((l) => JSON.parse(l) as { job_id: string; dispatch_id: string })).toEqual([expect.objectContaining({ job_id: 'killed-job', dispatch_id: 'dk', worker_id: 'echo-kill' })]);
});

test('bad env exits 2 with one stderr line naming the variable', async () => {
  const p = spawnEcho({ WORKER_MAX_PARALLEL: 'abc' });
  let stderr = '';
  p.child.stderr?.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const exit = await p.waitExit(10_000);
  expect(exit.code).toBe(2);
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain('WORKER_MAX_PARALLEL');
});
