import { subjects } from '@cordum/bus';
import { commonEnvSchema, createLogger, loadConfig, natsConnectionConfig } from '@cordum/service-kit';
import { makeNatsCreds, makeTestTls, natsTlsArgs, startNats, startRedis, type TestNatsCreds, type TestServer, type TestTls } from '@cordum/testing';
import { connectWorkerRuntime, type WorkerRuntime } from '../src';

// connectWorkerRuntime takes the NATS connection every service builds from the env
// (natsConnectionConfig): a worker logs in with its own NATS user, a creds file, over TLS.

const PASSWORD = 'worker-pw-71aa';

let redis: TestServer;
let tls: TestTls;
let creds: TestNatsCreds;
const lines: string[] = [];
const logger = createLogger({ service: 'worker', instance: 'w', level: 'debug', write: (l) => lines.push(l) });
const runtimes: WorkerRuntime[] = [];

beforeAll(async () => {
  redis = await startRedis();
  tls = makeTestTls();
  creds = makeNatsCreds();
});
afterAll(async () => {
  await Promise.all(runtimes.map((r) => r.close()));
  await redis.stop();
  tls.remove();
  creds.remove();
});

/** A runtime connected with the NATS options of `env` (the worker's env, as echo-worker reads it). */
async function runtime(env: Record<string, string>): Promise<WorkerRuntime> {
  const nats = natsConnectionConfig(loadConfig(commonEnvSchema, env));
  const rt = await connectWorkerRuntime({ name: 'auth-worker', nats, redis: { url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }, logger });
  runtimes.push(rt);
  return rt;
}

it('a worker on its own NATS user over TLS (NATS_URL user:password@, NATS_TLS_CA_FILE): ready, publishes, never logs the password', async () => {
  const nats = await startNats({ args: [...natsTlsArgs(tls), '--user', 'worker', '--pass', PASSWORD] });
  try {
    const rt = await runtime({ NATS_URL: nats.url.replace('nats://', `nats://worker:${PASSWORD}@`), NATS_TLS_CA_FILE: tls.caFile });
    expect(await rt.ready()).toBe(true);
    await rt.bus.publish(subjects.result, new Uint8Array([1]));
    await rt.close();
    expect(lines.join('\n')).not.toContain(PASSWORD);
  } finally {
    await nats.stop();
  }
});

it('a worker with a creds file (NATS_CREDS_FILE) on an operator-mode NATS', async () => {
  const nats = await startNats({ args: ['-c', creds.configFile] });
  try {
    const rt = await runtime({ NATS_URL: nats.url, NATS_CREDS_FILE: creds.credsFile });
    expect(await rt.ready()).toBe(true);
    await rt.bus.publish(subjects.result, new Uint8Array([1]));
    await rt.close();
  } finally {
    await nats.stop();
  }
});

it('the old natsServers option with user:password@ fails readably (nats.js would drop it), without the password', async () => {
  const nats = await startNats({ args: ['--user', 'worker', '--pass', PASSWORD] });
  try {
    const err = await connectWorkerRuntime({ name: 'old-style', natsServers: [nats.url.replace('nats://', `nats://worker:${PASSWORD}@`)], redis: { url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }, logger }).then(
      () => new Error('expected a failure'),
      (e: unknown) => e as Error,
    );
    expect(err.message).toContain('carries a user or password in its URL');
    expect(err.message).not.toContain(PASSWORD);
  } finally {
    await nats.stop();
  }
});
