// ensureStreams waits for a JetStream that does not answer yet (a cluster electing its leader,
// one too busy to answer within the 5 s request timeout, here a frozen server) instead of
// failing the service's start with the first TIMEOUT.
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { connectBus, STREAM_SYS, type Bus } from '../src';
import { testLogger } from './helpers';

describe('@cordum/bus ensureStreams against a JetStream that does not answer yet', () => {
  let server: TestServer;
  let bus: Bus;
  const log = testLogger();

  beforeAll(async () => {
    server = await startNats();
    bus = await connectBus({ servers: [server.url], name: 'bus-ensure', logger: log, registry: new Registry() });
  });
  afterAll(async () => {
    server?.process.kill('SIGCONT');
    await bus?.close();
    await server?.stop();
  });

  it('retries a request that timed out and creates the stream once the server answers', async () => {
    server.process.kill('SIGSTOP');
    const t0 = Date.now();
    const ensured = bus.ensureStreams().then(() => Date.now() - t0);
    ensured.catch(() => undefined); // awaited below
    try {
      // The first request can only time out (5 s) while the server is frozen.
      await waitFor(() => log.lines.some((l) => l.msg === 'bus: JetStream not ready, retrying the stream setup'), 20_000, { message: 'a retry logged', intervalMs: 100 });
    } finally {
      server.process.kill('SIGCONT');
    }
    expect(await ensured).toBeGreaterThanOrEqual(5_000);
    const retry = log.lines.find((l) => l.msg === 'bus: JetStream not ready, retrying the stream setup');
    expect(retry).toMatchObject({ level: 'warn', f: { stream: STREAM_SYS, attempt: 1 } });
    expect(log.lines.some((l) => l.msg === 'bus: stream created')).toBe(true);
  }, 60_000);
});
