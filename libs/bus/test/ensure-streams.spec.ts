// ensureStreams waits for a JetStream that does not answer yet (a cluster electing its leader,
// one too busy to answer within the 5 s request timeout, here a frozen server) instead of
// failing the service's start with the first TIMEOUT.
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connect } from 'nats';
import { Registry } from 'prom-client';
import { connectBus, STREAM_SYS, type Bus } from '../src';
import { isTransientJsError } from '../src/errors';
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
    await server.process.freeze();
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
    // Created by the retry, or by the first attempt's own add if its info got through before the
    // freeze and the add waited in the socket (the server runs it on SIGCONT, the retry finds it).
    const raw = await connect({ servers: server.url });
    try {
      expect((await (await raw.jetstreamManager()).streams.info(STREAM_SYS)).config.name).toBe(STREAM_SYS);
    } finally {
      await raw.close();
    }
  }, 60_000);
});

describe('which JetStream errors ensureStreams waits out', () => {
  // Shaped as nats.js builds them from a JetStream API reply: message = description, api_error set.
  const apiError = (err_code: number, description: string): Error => Object.assign(new Error(description), { api_error: { code: 503, err_code, description } });

  it('a cluster without a meta leader, or one still gathering its peers, is transient', () => {
    expect(isTransientJsError(apiError(10008, 'JetStream system temporarily unavailable'))).toBe(true);
    expect(isTransientJsError(apiError(10005, 'no suitable peers for placement'))).toBe(true);
    expect(isTransientJsError(apiError(10099, 'no suitable peers for placement'))).toBe(true);
  });

  it('a refused stream config or a plain error is not', () => {
    expect(isTransientJsError(apiError(10058, 'stream name already in use with a different configuration'))).toBe(false);
    expect(isTransientJsError(new Error('no suitable peers for placement'))).toBe(false);
  });
});
