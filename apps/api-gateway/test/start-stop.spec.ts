// A stop that comes while the gateway is starting (SIGTERM during a slow start) ends the start:
// nothing is left listening or connected, "api-gateway ready" is never logged, and start()
// resolves (a stop is not a failed start), so the signal's shutdown exits 0.
import { createLogger } from '@cordum/service-kit';
import { startNats, startRedis, type TestServer } from '@cordum/testing';
import { loadGatewayConfig } from '../src/config';
import { createGateway } from '../src/gateway';
import { gatewayTestEnv, startFakeKernel, type FakeKernel } from './harness';

let redis: TestServer;
let nats: TestServer;
let kernel: FakeKernel;

beforeAll(async () => {
  [redis, nats, kernel] = await Promise.all([startRedis(), startNats(), startFakeKernel()]);
});

afterAll(async () => {
  await kernel.stop();
  await Promise.all([nats.stop(), redis.stop()]);
});

function gateway(stopAt?: string) {
  const lines: string[] = [];
  const config = loadGatewayConfig(gatewayTestEnv({ redis: redis.url, nats: nats.url, kernel: kernel.address }, 'gw-start-stop'));
  let stopping: Promise<void> | undefined;
  // The stop comes from the step's own log line, as a SIGTERM would at that moment of the start.
  const write = (l: string): void => {
    lines.push(l);
    if (stopAt !== undefined && stopping === undefined && (JSON.parse(l) as { msg: string }).msg === stopAt) stopping = gw.stop();
  };
  const logger = createLogger({ service: 'api-gateway', instance: 'gw-start-stop', level: 'info', write });
  const gw = createGateway(config, { logger });
  return { gw, lines, stopped: () => stopping };
}

// One stop at each step of the start, each named by the line the step logs.
it.each(['starting api-gateway', 'bus: connected to NATS', 'bus: stream created', 'elected leader', 'rate limits applied', 'config section applied', 'health server listening'])(
  'a stop when the start logs "%s" ends it: never ready, nothing listening, start() resolves',
  async (step) => {
    const { gw, lines, stopped } = gateway(step);
    await expect(gw.start()).resolves.toBeUndefined();
    await stopped();
    expect(stopped()).toBeDefined();
    expect(lines.some((l) => l.includes('"msg":"api-gateway stopped"'))).toBe(true);
    expect(lines.some((l) => l.includes('api-gateway ready'))).toBe(false);
    // whatever start() made after the stop began is closed too
    for (const port of [gw.httpPort, gw.grpcPort, gw.metricsPort]) {
      if (port > 0) await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    }
  },
);

it('a start that completes and is then stopped closes everything (control)', async () => {
  const { gw, lines } = gateway();
  await gw.start();
  expect(lines.some((l) => l.includes('api-gateway ready'))).toBe(true);
  const port = gw.httpPort;
  expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  await gw.stop();
  await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
});
