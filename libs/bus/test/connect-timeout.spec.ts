// connectTimeoutMs (NATS_CONNECT_TIMEOUT, decisions.md P265): each connect attempt's budget. A
// server that accepts the TCP connection and never sends its INFO (a stopped process whose kernel
// still accepts, a proxy in front of nothing) is given up on after it, not after the default 3 s.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { connectBus } from '../src';
import { testLogger } from './helpers';

let silent: Server;
const sockets: Socket[] = [];
let url: string;

beforeAll(async () => {
  silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  url = `nats://127.0.0.1:${(silent.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => silent.close(() => r()));
});

async function failsAfter(connectTimeoutMs: number | undefined): Promise<{ ms: number; message: string }> {
  const started = Date.now();
  const err = await connectBus({ servers: [url], name: 'connect-timeout', logger: testLogger(), registry: new Registry(), ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }) }).then(
    async (bus) => { await bus.close(); return new Error('connected to a server that never answers'); },
    (e: unknown) => e as Error,
  );
  return { ms: Date.now() - started, message: err.message };
}

it('gives up on a server that never answers after connectTimeoutMs', async () => {
  const short = await failsAfter(400);
  expect(short.message).toMatch(/connect to nats:\/\/127\.0\.0\.1:\d+: .*TIMEOUT/i);
  expect(short.ms).toBeGreaterThanOrEqual(350);
  expect(short.ms).toBeLessThan(2_900);
});

it('waits the default 3 s without it', async () => {
  const dflt = await failsAfter(undefined);
  expect(dflt.message).toMatch(/TIMEOUT/i);
  expect(dflt.ms).toBeGreaterThanOrEqual(2_900);
});
