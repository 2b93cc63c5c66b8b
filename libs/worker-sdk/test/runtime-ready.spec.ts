// A worker runtime's readiness (its /readyz in echo-worker) needs CORDUM_SYS to answer, not only
// the NATS socket to be up: a frozen nats-server keeps the socket until the pings fail (10 s or
// more) while no result could be stored (decisions.md P263).
import { connect } from 'nats';
import { createLogger } from '@cordum/service-kit';
import { freePort, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { connectWorkerRuntime, type WorkerRuntime } from '../src';

let redis: TestServer;
let nats: TestServer;
let rt: WorkerRuntime;

beforeAll(async () => {
  [redis, nats] = await Promise.all([startRedis(), startNats()]);
  const logger = createLogger({ service: 'worker', instance: 'w', level: 'error', write: () => undefined });
  rt = await connectWorkerRuntime({ name: 'ready-worker', natsServers: [nats.url], redis: { url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }, logger });
});

afterAll(async () => {
  await rt?.close();
  await Promise.all([redis?.stop(), nats?.stop()]);
});

it('is false while its nats-server is frozen and the connection still counts as up, true after SIGCONT', async () => {
  expect(await rt.ready()).toBe(true);
  await nats.process.freeze();
  try {
    // Within the stream request's 1.5 s and the half second a shared answer stands (P268); the pings
    // take 10 s or more to give the connection up.
    await waitFor(async () => !(await rt.ready()), 4_000, { message: 'not ready with NATS frozen' });
    expect(rt.bus.connected).toBe(true);
    // P316: the named checks say which: the socket is up, the stream does not answer, Redis does
    const named = Object.fromEntries(await Promise.all(rt.checks.map(async (c) => [c.name, await c.check()] as const)));
    expect(named).toEqual({ nats: true, jetstream: false, redis: true });
  } finally {
    nats.process.kill('SIGCONT');
  }
  await waitFor(() => rt.ready(), 20_000, { message: 'ready after SIGCONT' });
});

it('closes its NATS connection when the stream set-up fails (P316: it reconnected for ever)', async () => {
  const logger = createLogger({ service: 'worker', instance: 'w', level: 'error', write: () => undefined });
  const monitor = await freePort();
  const other = await startNats({ args: ['-m', String(monitor)] });
  const connections = async (): Promise<number> => ((await (await fetch(`http://127.0.0.1:${monitor}/connz`)).json()) as { num_connections: number }).num_connections;
  try {
    // Another stream already takes a subject CORDUM_SYS needs: creating it fails for good.
    const nc = await connect({ servers: other.url });
    await (await nc.jetstreamManager()).streams.add({ name: 'SOMEONE_ELSES', subjects: ['sys.job.submit'] });
    await nc.close();
    await expect(connectWorkerRuntime({ name: 'stream-clash', natsServers: [other.url], redis: { url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 }, logger })).rejects.toThrow(/CORDUM_SYS/);
    await waitFor(async () => (await connections()) === 0, 5_000, { message: 'no connection left on the NATS' });
  } finally {
    await other.stop();
  }
});
