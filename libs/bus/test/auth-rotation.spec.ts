// A NATS password rotated while the services run (a Kubernetes Secret mounted as a file, then
// the server's config reloaded). The server drops the connections it no longer authorizes; the
// bus logs in again with the password read from its file at that reconnect, and while the file
// still holds the old one it keeps trying: nats.js closed the connection after two refusals, and
// the replica stayed not ready until restarted (decisions.md P111, P121).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connectBus, type Bus, type BusOptions } from '../src';
import { secretReader } from '../src/bus';
import { roundTrip, testLogger, type CapturingLogger } from './helpers';

const REFUSED_LOG = 'bus: NATS refused the login at a reconnect, retrying (a rotated secret not yet in its file?)';

describe('a NATS password rotated while connected', () => {
  let nats: TestServer;
  let dir: string;
  let conf: string;
  const open: Bus[] = [];

  /** The server's password, applied by a config reload (SIGHUP), as an operator rotates it. */
  const setServerPassword = async (pw: string): Promise<void> => {
    // JetStream as the command line started it: a reload without it in the file shuts it down.
    writeFileSync(conf, `jetstream { store_dir: ${JSON.stringify(nats.dir)} }\nauthorization { user: alice, password: "${pw}" }\n`);
    const reloads = (): number => nats.process.output.filter((l) => l.includes('Reloaded server configuration')).length;
    const before = reloads();
    nats.process.kill('SIGHUP');
    await waitFor(() => reloads() > before, 10_000, { message: 'nats-server reloaded its config' });
  };
  const refusalsOnServer = (): number => nats.process.output.filter((l) => /authorization violation|authentication error/i.test(l)).length;

  async function connect(o: Omit<BusOptions, 'name' | 'logger'> & { logger: CapturingLogger }): Promise<Bus> {
    const b = await connectBus({ name: 'rotation-test', ...o });
    open.push(b);
    return b;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-nats-rotation-'));
    conf = join(dir, 'nats.conf');
    writeFileSync(conf, 'authorization { user: alice, password: "pw-one" }\n');
    nats = await startNats({ args: ['-c', conf] });
  });
  afterAll(async () => {
    await Promise.all(open.map((b) => b.close()));
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the file first, then the server: the reconnect logs in with the password now in the file, no restart', async () => {
    const pwFile = join(dir, 'pw-a');
    writeFileSync(pwFile, 'pw-one\n');
    const logger = testLogger();
    const b = await connect({ servers: [nats.url], user: 'alice', password: 'pw-one', passwordFile: pwFile, logger });
    await roundTrip(b);
    writeFileSync(pwFile, 'pw-two\n');
    await setServerPassword('pw-two');
    await waitFor(() => logger.lines.some((l) => l.msg === 'bus: disconnected from NATS'), 10_000, { message: 'the server dropped the connection it no longer authorizes' });
    await waitFor(() => b.connected, 15_000, { message: 'reconnected with the new password' });
    await roundTrip(b);
    expect(JSON.stringify(logger.lines)).not.toMatch(/pw-one|pw-two/);
  }, 40_000);

  it('the server first: refused reconnects go on (nats.js stopped after two) until the file has the new password; one log line, no password in it', async () => {
    const pwFile = join(dir, 'pw-b');
    writeFileSync(pwFile, 'pw-two\n');
    const logger = testLogger();
    const b = await connect({ servers: [nats.url], user: 'alice', password: 'pw-two', passwordFile: pwFile, logger });
    await roundTrip(b);
    const before = refusalsOnServer();
    await setServerPassword('pw-three');
    // Well past the two refusals after which nats.js used to close the connection for good.
    await waitFor(() => refusalsOnServer() - before >= 4, 20_000, { message: 'four refused reconnects', intervalMs: 100 });
    expect(b.connected).toBe(false);
    expect(logger.lines.filter((l) => l.msg === REFUSED_LOG)).toEqual([expect.objectContaining({ level: 'warn', f: expect.objectContaining({ login: 'user "alice"' }) })]);
    // The Secret's new value reaches the file (the kubelet's sync): the next reconnect logs in.
    writeFileSync(pwFile, 'pw-three\n');
    await waitFor(() => b.connected, 15_000, { message: 'reconnected once the file has the new password' });
    await roundTrip(b);
    expect(JSON.stringify(logger.lines)).not.toMatch(/pw-two|pw-three/);
  }, 60_000);

  it('a password given as a value, not a file, is also retried: the replica recovers when the server takes it again', async () => {
    await setServerPassword('pw-four');
    const logger = testLogger();
    const b = await connect({ servers: [nats.url], user: 'alice', password: 'pw-four', logger });
    await roundTrip(b);
    const before = refusalsOnServer();
    await setServerPassword('pw-five');
    await waitFor(() => refusalsOnServer() - before >= 4, 20_000, { message: 'four refused reconnects', intervalMs: 100 });
    await setServerPassword('pw-four'); // rolled back
    await waitFor(() => b.connected, 15_000, { message: 'reconnected after the rollback' });
    await roundTrip(b);
  }, 60_000);

  it('a bus closed while its reconnects are refused stops trying: close() resolves and no more logins reach the server', async () => {
    // The refusals are counted server-wide: the earlier tests' buses go first.
    await Promise.all(open.splice(0).map((x) => x.close()));
    const b = await connectBus({ name: 'rotation-close', logger: testLogger(), servers: [nats.url], user: 'alice', password: 'pw-four' });
    await roundTrip(b);
    const before = refusalsOnServer();
    await setServerPassword('pw-six');
    await waitFor(() => refusalsOnServer() - before >= 3, 20_000, { message: 'three refused reconnects', intervalMs: 100 });
    await b.close();
    expect(b.connected).toBe(false);
    // An observation window, not a wait: nats.js retries every 0.5-1 s, so 3 s of a loop left
    // running would show several more refusals. One attempt on the wire at close() may still land.
    const atClose = refusalsOnServer();
    await new Promise((r) => setTimeout(r, 3_000));
    expect(refusalsOnServer() - atClose).toBeLessThanOrEqual(1);
  }, 40_000);
});

describe('secretReader', () => {
  it('reads the file at each call, keeps the last good value while it is missing or empty', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-secret-reader-'));
    try {
      const f = join(dir, 's');
      expect(secretReader('start', undefined)()).toBe('start');
      const read = secretReader('start', f);
      expect(read()).toBe('start'); // no file yet
      writeFileSync(f, 'one\r\n');
      expect(read()).toBe('one');
      writeFileSync(f, '\n');
      expect(read()).toBe('one');
      rmSync(f);
      expect(read()).toBe('one');
      writeFileSync(f, 'two');
      expect(read()).toBe('two');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
