import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, createMetricsRegistry, logConfig } from '@cordum/service-kit';
import { startNats, startRedis, type TestServer } from '@cordum/testing';
import { createEchoWorker } from '../src/app';
import { loadEchoWorkerConfig } from '../src/config';

// operations.md: run workers you do not fully trust on their own NATS user. The echo worker
// reads that user from its env like every service and starts against a NATS that requires it.

const TOKEN = 'echo-token-4b1f';
let nats: TestServer;
let redis: TestServer;
let dir: string;

beforeAll(async () => {
  [nats, redis] = await Promise.all([startNats({ args: ['--auth', TOKEN] }), startRedis()]);
  dir = mkdtempSync(join(tmpdir(), 'echo-auth-'));
});
afterAll(async () => {
  await Promise.all([nats.stop(), redis.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

it('starts with NATS_TOKEN_FILE against nats-server --auth, and its config log hides the token', async () => {
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  const config = loadEchoWorkerConfig({ NATS_URL: nats.url, NATS_TOKEN_FILE: tokenFile, REDIS_URL: redis.url, WORKER_ID: 'echo-auth' });
  expect(config.nats).toEqual({ servers: [nats.url], token: TOKEN, tokenFile }); // the file: read again at each reconnect (P121)
  const lines: string[] = [];
  const logger = createLogger({ service: 'echo-worker', instance: 't', level: 'debug', write: (l) => lines.push(l) });
  logConfig(logger, config); // as runService does
  const echo = createEchoWorker(config, { logger, registry: createMetricsRegistry({ service: 'echo-worker', pod: 't' }) });
  try {
    await echo.start();
    expect(await echo.runtime?.ready()).toBe(true);
  } finally {
    await echo.stop();
  }
  expect(lines.join('\n')).not.toContain(TOKEN);
});
