// The creds file is read again at every (re)connect (P121), as it is: nats.js's credsAuthenticator
// needs the line break after the seed's closing dashes, and trimming it (as for a password) made a
// creds file that ends right there (no trailing "****" banner, as hand-made or scripted files often
// do) BAD_CREDS at the first connect. A file that holds no usable creds at a reconnect keeps the
// last good ones: nats.js closes the connection for good when the authenticator throws (P125).
import { makeNatsCreds, startNats, waitFor, type TestNatsCreds, type TestServer } from '@cordum/testing';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectBus, type Bus } from '../src';
import { roundTrip, testLogger } from './helpers';

const open: Bus[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});

/** The creds text cut right after the seed's END line and its line break (no trailing banner). */
function withoutBanner(text: string): string {
  const end = text.indexOf('------END USER NKEY SEED------');
  return text.slice(0, end + '------END USER NKEY SEED------'.length) + '\n';
}

describe('a creds file read again at each connect (credentialsFile)', () => {
  let creds: TestNatsCreds;
  let nats: TestServer;
  beforeAll(async () => {
    creds = makeNatsCreds();
    nats = await startNats({ args: ['-c', creds.configFile] });
  });
  afterAll(async () => {
    await nats.stop();
    creds.remove();
  });

  it('the same text as `credentials` alone connects (control)', async () => {
    const text = withoutBanner(readFileSync(creds.credsFile, 'utf8'));
    const b = await connectBus({ name: 'creds-control', logger: testLogger(), servers: [nats.url], credentials: text });
    open.push(b);
    await roundTrip(b);
  });

  it('a creds file that ends with the seed block connects when passed as credentialsFile too', async () => {
    const text = withoutBanner(readFileSync(creds.credsFile, 'utf8'));
    const file = join(creds.dir, 'no-banner.creds');
    writeFileSync(file, text, { mode: 0o600 });
    const b = await connectBus({ name: 'creds-file', logger: testLogger(), servers: [nats.url], credentials: text, credentialsFile: file });
    open.push(b);
    await roundTrip(b);
  });

  it('a creds file rotated to unparseable text at a reconnect does not close the connection for good', async () => {
    const text = readFileSync(creds.credsFile, 'utf8');
    const file = join(creds.dir, 'rotating.creds');
    writeFileSync(file, text, { mode: 0o600 });
    const logger = testLogger();
    const b = await connectBus({ name: 'creds-rotate', logger, servers: [nats.url], credentials: text, credentialsFile: file });
    open.push(b);
    await roundTrip(b);
    // A bad value lands in the file (a wrong Secret key mounted), then the server restarts.
    writeFileSync(file, 'not a creds file\n');
    nats.process.kill('SIGKILL');
    await nats.process.waitExit();
    await waitFor(() => !b.connected, 10_000, { message: 'the bus saw the server go' });
    nats = await nats.restart();
    // The good file comes back: the bus must get there without a restart.
    await new Promise((r) => setTimeout(r, 3_000));
    writeFileSync(file, text, { mode: 0o600 });
    await waitFor(() => b.connected, 15_000, { message: 'reconnected once the creds file is good again' });
  }, 40_000);
});
