// Once refused logins at reconnects are retried for ever
// (keepRetryingRefusedLogins), closing the bus must still end the retries: close() resolves
// within its drain bound and the server sees no further login attempts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connectBus } from '../src';
import { roundTrip, testLogger } from './helpers';

describe('a bus closed while NATS refuses its reconnects', () => {
  let nats: TestServer;
  let dir: string;
  let conf: string;

  const setServerPassword = async (pw: string): Promise<void> => {
    writeFileSync(conf, `jetstream { store_dir: ${JSON.stringify(nats.dir)} }\nauthorization { user: alice, password: "${pw}" }\n`);
    const reloads = (): number => nats.process.output.filter((l) => l.includes('Reloaded server configuration')).length;
    const before = reloads();
    nats.process.kill('SIGHUP');
    await waitFor(() => reloads() > before, 10_000, { message: 'nats-server reloaded its config' });
  };
  const refusalsOnServer = (): number => nats.process.output.filter((l) => /authorization violation|authentication error/i.test(l)).length;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-nats-close-refused-'));
    conf = join(dir, 'nats.conf');
    writeFileSync(conf, 'authorization { user: alice, password: "pw-one" }\n');
    nats = await startNats({ args: ['-c', conf] });
  });
  afterAll(async () => {
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('close() ends the retry loop', async () => {
    const logger = testLogger();
    const b = await connectBus({ name: 'close-refused', logger, servers: [nats.url], user: 'alice', password: 'pw-one' });
    await roundTrip(b);
    const before = refusalsOnServer();
    await setServerPassword('pw-two');
    await waitFor(() => refusalsOnServer() - before >= 3, 20_000, { message: 'three refused reconnects', intervalMs: 100 });
    const t0 = Date.now();
    await b.close();
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(b.connected).toBe(false);
    const closeMs = Date.now() - t0;
    // An attempt already on the wire at close() may still be refused (its line lands a bit later).
    await new Promise((r) => setTimeout(r, 1_000));
    const after = refusalsOnServer();
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 1_000));
      seen.push(refusalsOnServer() - after);
    }
    process.stderr.write(`close took ${closeMs} ms; refusals after close+1s: ${JSON.stringify(seen)}\n`);
    expect(seen.at(-1)).toBe(0);
  }, 60_000);
});
