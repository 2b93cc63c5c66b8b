// STYLE 10: start, stop twice, and Redis connections are back to baseline;
// the lifecycle refuses a second start.
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { startNats, startRedis, type TestServer } from '@cordum/testing';
import { loadGatewayConfig } from '../src/config';
import { createGateway } from '../src/gateway';
import { startFakeKernel, type FakeKernel } from './harness';

let redis: TestServer;
let nats: TestServer;
let kernel: FakeKernel;
let probe: RedisClient;

beforeAll(async () => {
  redis = await startRedis();
  nats = await startNats();
  kernel = await startFakeKernel();
  probe = createRedis({ url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'probe' });
});

afterAll(async () => {
  await closeRedis(probe);
  await kernel.stop();
  await nats.stop();
  await redis.stop();
});

async function connectedClients(): Promise<number> {
  const info = await probe.info('clients');
  return Number(/connected_clients:(\d+)/.exec(info)?.[1] ?? NaN);
}

it('stop() is idempotent, releases every Redis connection and frees the port', async () => {
  const baseline = await connectedClients();
  const config = loadGatewayConfig({
    REDIS_URL: redis.url,
    NATS_URL: nats.url,
    GATEWAY_HTTP_ADDR: '127.0.0.1:0',
    GATEWAY_METRICS_ADDR: '127.0.0.1:0',
    SAFETY_KERNEL_ADDR: kernel.address,
    CORDUM_API_KEY: 'admin-key-12345678',
  });
  const gw = createGateway(config, { logger: createLogger({ service: 'api-gateway', instance: 't', level: 'error', write: () => undefined }) });
  await gw.start();
  const res = await fetch(`http://127.0.0.1:${gw.httpPort}/api/v1/jobs`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': 'admin-key-12345678' },
    body: JSON.stringify({ prompt: 'x', topic: 'job.echo' }),
  });
  expect(res.status).toBe(200);
  expect(await connectedClients()).toBeGreaterThan(baseline);
  // A start in the wrong state throws and leaves the running gateway alone.
  await expect(gw.start()).rejects.toThrow(/cannot start/);
  expect((await fetch(`http://127.0.0.1:${gw.httpPort}/healthz`)).status).toBe(200);
  await Promise.all([gw.stop(), gw.stop()]);
  await gw.stop();
  expect(await connectedClients()).toBe(baseline);
  await expect(fetch(`http://127.0.0.1:${gw.httpPort}/healthz`)).rejects.toThrow();
});
