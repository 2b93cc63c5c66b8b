import { createLogger, createMetricsRegistry, isConfigError, Shutdown } from '@cordum/service-kit';
import { hostname } from 'node:os';
import { createEchoWorker } from '../src/app';
import { loadEchoWorkerConfig } from '../src/config';

test('defaults follow CONTRACT §1 and D39', () => {
  const c = loadEchoWorkerConfig({});
  expect(c).toMatchObject({
    workerId: `echo-${hostname()}-${process.pid}`,
    topics: ['job.echo', 'job.default'],
    pool: 'default',
    maxParallelJobs: 32,
    echoDelayMs: 0,
    heartbeatIntervalMs: 5_000,
    directDispatch: true,
    nats: { servers: ['nats://127.0.0.1:4222'] },
    redis: { url: 'redis://127.0.0.1:6379', clusterAddresses: [], poolSize: 20, minIdleConns: 5 },
  });
  expect(c.httpAddr).toBeUndefined();
  expect(c.execLogPath).toBeUndefined();
  expect(c.claimTtlMs).toBe(7 * 86_400_000);
  expect(loadEchoWorkerConfig({ JOB_TTL: '10m' }).claimTtlMs).toBe(600_000);
  expect(() => loadEchoWorkerConfig({ JOB_TTL: '30s' })).toThrow(/JOB_TTL/);
});

test('env values are parsed: lists, durations, addresses', () => {
  const c = loadEchoWorkerConfig({
    WORKER_ID: 'e1', WORKER_TOPICS: 'job.a, job.b.c', WORKER_POOL: 'gpu', WORKER_MAX_PARALLEL: '4', WORKER_HTTP_ADDR: ':9099',
    WORKER_EXEC_LOG: '/tmp/x.log', WORKER_ECHO_DELAY: '250ms', WORKER_HEARTBEAT_INTERVAL: '1s', NATS_URL: 'nats://a:1,nats://b:2',
  });
  expect(c).toMatchObject({
    workerId: 'e1', topics: ['job.a', 'job.b.c'], pool: 'gpu', maxParallelJobs: 4, httpAddr: { host: '', port: 9099 },
    execLogPath: '/tmp/x.log', echoDelayMs: 250, heartbeatIntervalMs: 1000, nats: { servers: ['nats://a:1', 'nats://b:2'] },
  });
});

test.each([
  ['WORKER_MAX_PARALLEL', 'abc'],
  ['WORKER_MAX_PARALLEL', '0'],
  // an int32 in every heartbeat: a larger one was accepted and no heartbeat was ever sent
  ['WORKER_MAX_PARALLEL', '3000000000'],
  ['WORKER_TOPICS', 'echo'],
  ['WORKER_ECHO_DELAY', 'soon'],
  ['WORKER_HTTP_ADDR', 'nope'],
  // the whole stop is cut at 15 s: a longer wait would leave running jobs unanswered
  ['WORKER_STOP_TIMEOUT', '20s'],
  ['WORKER_STOP_TIMEOUT', '13001ms'],
  // the scheduler forgets a worker 30 s after its last heartbeat: 10m left it unroutable for good
  ['WORKER_HEARTBEAT_INTERVAL', '10m'],
  ['WORKER_HEARTBEAT_INTERVAL', '10001ms'],
  // P61: keys are read and checked at start
  ['CAP_SIGNING_KEY_FILE', '/nonexistent/cap.key.pem'],
  ['CAP_VERIFY_KEY_FILE', '/nonexistent/cap.pub.pem'],
  // P286: the SDK refuses a blank id or pool; refused here it is one line and exit 2, not a failed start
  ['WORKER_ID', '   '],
  ['WORKER_POOL', ' '],
  ['WORKER_POOL', 'p'.repeat(256)],
])('bad %s=%s fails with one line naming it', (name, value) => {
  let err: unknown;
  try {
    loadEchoWorkerConfig({ [name]: value });
  } catch (e) {
    err = e;
  }
  expect(isConfigError(err)).toBe(true);
  const msg = (err as Error).message;
  expect(msg).toContain(name);
  expect(msg).not.toContain('\n');
});

test('WORKER_STOP_TIMEOUT up to 13s is taken', () => {
  expect(loadEchoWorkerConfig({ WORKER_STOP_TIMEOUT: '13s' }).stopTimeoutMs).toBe(13_000);
  expect(loadEchoWorkerConfig({}).stopTimeoutMs).toBe(10_000);
});

test("the process's stop deadline covers WORKER_STOP_TIMEOUT and the answers after it (P218, P221)", () => {
  const logger = createLogger({ service: 'echo-test', instance: 't', level: 'error' });
  const shutdown = new Shutdown({ logger, exit: () => undefined });
  createEchoWorker(loadEchoWorkerConfig({ WORKER_STOP_TIMEOUT: '13s' }), { logger, registry: createMetricsRegistry({ service: 'echo-worker', pod: 'd' }), shutdown });
  expect(shutdown.deadlineMs).toBe(18_000);
});

test('worker options the SDK refuses fail the start before anything connects (no NATS wait)', async () => {
  // Config objects built by hand (env parsing refuses these): NATS and Redis point nowhere, so a
  // start that connected first would wait for NATS instead of failing.
  const config = { ...loadEchoWorkerConfig({ NATS_URL: 'nats://127.0.0.1:1', REDIS_URL: 'redis://127.0.0.1:1' }), topics: ['job.>'] };
  const echo = createEchoWorker(config, { logger: createLogger({ service: 'echo-test', instance: 't', level: 'error' }), registry: createMetricsRegistry({ service: 'echo-worker', pod: 't' }) });
  await expect(echo.start()).rejects.toMatchObject({ code: 'worker_invalid_options', message: expect.stringContaining("topics: 'job.>' is not a job topic") });
  expect(echo.runtime).toBeNull();
  await echo.stop();
});
