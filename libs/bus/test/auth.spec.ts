import { makeNatsCreds, makeTestTls, natsTlsArgs, startNats, waitFor, type TestNatsCreds, type TestServer, type TestTls } from '@cordum/testing';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectBus, isBusError, type Bus, type BusOptions } from '../src';
import { redactServers } from '../src/bus';
import { roundTrip, testLogger, type CapturingLogger } from './helpers';

// A NATS that requires a login or TLS: the bus passes user/password, a token, a creds file and
// TLS files to nats.js, and no error or log line it makes carries a password or token.

const PASSWORD = 's3cret-pw-9f2';
const TOKEN = 'tok-3e8d-secret';

const open: Bus[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});

async function connect(o: Omit<BusOptions, 'name' | 'logger'> & { logger?: CapturingLogger }): Promise<Bus> {
  const b = await connectBus({ name: 'auth-test', logger: testLogger(), ...o });
  open.push(b);
  return b;
}

/** The error a connect fails with (it must fail). */
async function connectError(o: Parameters<typeof connect>[0]): Promise<Error> {
  try {
    await connect(o);
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the connect to fail');
}

/** Every text an error carries to a log line: message, its causes' messages and stacks. */
function errorTexts(err: unknown): string {
  const out: string[] = [];
  for (let e: unknown = err, i = 0; e instanceof Error && i < 5; e = e.cause, i++) out.push(e.message, e.stack ?? '');
  return out.join('\n');
}

describe('a NATS with a user and password (nats-server --user --pass)', () => {
  let nats: TestServer;
  beforeAll(async () => {
    nats = await startNats({ args: ['--user', 'alice', '--pass', PASSWORD] });
  });
  afterAll(async () => {
    await nats.stop();
  });

  it('connects with user and password', async () => {
    await roundTrip(await connect({ servers: [nats.url], user: 'alice', password: PASSWORD }));
  });

  it('a wrong password fails at once, also when the first connect waits, with a readable error that names the user, not the password', async () => {
    for (const waitOnFirstConnect of [false, true]) {
      const logger = testLogger();
      const err = await connectError({ servers: [nats.url], user: 'alice', password: 'wrong-pw-77', logger, waitOnFirstConnect });
      expect(isBusError(err, 'bus_connect_failed')).toBe(true);
      expect(err.message).toBe(`connect to ${nats.url}: 'Authorization Violation' (NATS refused the login: user "alice")`);
      expect(errorTexts(err)).not.toContain('wrong-pw-77');
      expect(JSON.stringify(logger.lines)).not.toContain('wrong-pw-77');
    }
  });

  it('no credentials: refused, and the error says none were given', async () => {
    const err = await connectError({ servers: [nats.url] });
    expect(err.message).toContain('(NATS refused the login: no credentials)');
  });

  it('refuses a server URL that carries user:password@ (nats.js would drop it), without echoing the password', async () => {
    const url = nats.url.replace('nats://', `nats://alice:${PASSWORD}@`);
    const err = await connectError({ servers: [url] });
    expect(isBusError(err, 'bus_connect_failed')).toBe(true);
    expect(err.message).toContain(`NATS server ${nats.url.replace('nats://', 'nats://<redacted>@')} carries a user or password in its URL`);
    expect(errorTexts(err)).not.toContain(PASSWORD);
  });
});

describe('a NATS with a token (nats-server --auth)', () => {
  let nats: TestServer;
  beforeAll(async () => {
    nats = await startNats({ args: ['--auth', TOKEN] });
  });
  afterAll(async () => {
    await nats.stop();
  });

  it('connects with the token; a wrong token fails naming no secret', async () => {
    await roundTrip(await connect({ servers: [nats.url], token: TOKEN }));
    const err = await connectError({ servers: [nats.url], token: 'not-the-token' });
    expect(err.message).toContain("'Authorization Violation' (NATS refused the login: a token)");
    expect(errorTexts(err)).not.toMatch(/not-the-token|tok-3e8d/);
  });

  it('two ways to log in at once are refused before connecting', async () => {
    const err = await connectError({ servers: [nats.url], token: TOKEN, user: 'alice', password: PASSWORD });
    expect(err.message).toBe('connectBus: give one way to log in to NATS (user and password, token, or credentials)');
  });
});

describe('a NATS in operator mode (creds file: user JWT + nkey seed)', () => {
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

  it('connects with the creds of a user of a JetStream account; a stranger\'s creds are refused', async () => {
    await roundTrip(await connect({ servers: [nats.url], credentials: readFileSync(creds.credsFile, 'utf8') }));
    const stranger = readFileSync(creds.strangerCredsFile, 'utf8');
    const err = await connectError({ servers: [nats.url], credentials: stranger });
    expect(err.message).toContain("'Authorization Violation' (NATS refused the login: a creds file)");
    const seed = /SU[A-Z2-7]{50,}/.exec(stranger)![0];
    expect(errorTexts(err)).not.toContain(seed);
  });

  // The creds file is read again at every (re)connect (credentialsFile, P121), as it is: nats.js
  // needs the line break after the seed's closing dashes, and trimming it (as for a password) made
  // a creds file that ends right there (no "****" banner, as hand-made or scripted files often do)
  // BAD_CREDS at the first connect. Text it cannot sign with keeps the last good creds: nats.js
  // closes the connection for good when the authenticator throws (P125).
  const withoutBanner = (text: string): string => {
    const end = '------END USER NKEY SEED------';
    return text.slice(0, text.indexOf(end) + end.length) + '\n';
  };

  it('a creds file that ends with the seed block connects when it is read from the file too', async () => {
    const text = withoutBanner(readFileSync(creds.credsFile, 'utf8'));
    const file = join(creds.dir, 'no-banner.creds');
    writeFileSync(file, text, { mode: 0o600 });
    await roundTrip(await connect({ servers: [nats.url], credentials: text }));
    await roundTrip(await connect({ servers: [nats.url], credentials: text, credentialsFile: file }));
  });

  it('a creds file holding unusable text at a reconnect: the last good creds log in, the connection is not closed for good', async () => {
    const text = readFileSync(creds.credsFile, 'utf8');
    const file = join(creds.dir, 'rotating.creds');
    writeFileSync(file, text, { mode: 0o600 });
    const b = await connect({ servers: [nats.url], credentials: text, credentialsFile: file });
    await roundTrip(b);
    // A bad value lands in the file (a wrong Secret key mounted), then the server restarts.
    writeFileSync(file, 'not a creds file\n');
    nats.process.kill('SIGKILL');
    await nats.process.waitExit();
    await waitFor(() => !b.connected, 10_000, { message: 'the bus saw the server go' });
    nats = await nats.restart();
    await waitFor(() => b.connected, 15_000, { message: 'reconnected with the last good creds while the file is bad' });
    await roundTrip(b);
  }, 40_000);
});

describe('a NATS with TLS (a self-signed CA made with openssl)', () => {
  let tls: TestTls;
  let nats: TestServer;
  let mutual: TestServer;
  beforeAll(async () => {
    tls = makeTestTls();
    [nats, mutual] = await Promise.all([startNats({ args: natsTlsArgs(tls) }), startNats({ args: natsTlsArgs(tls, true) })]);
  });
  afterAll(async () => {
    await Promise.all([nats.stop(), mutual.stop()]);
    tls.remove();
  });

  it('connects trusting the CA file', async () => {
    await roundTrip(await connect({ servers: [nats.url], tls: { caFile: tls.caFile } }));
  });

  it('refuses a server whose certificate does not chain to the CA given', async () => {
    const err = await connectError({ servers: [nats.url], tls: { caFile: tls.otherCaFile } });
    expect(isBusError(err, 'bus_connect_failed')).toBe(true);
    expect(err.message).toMatch(/^connect to nats:\/\/127\.0\.0\.1:\d+: .*(certificate|self.signed)/i);
  });

  // Without a client certificate nats.js only times out (20 s, TLS 1.3 reports the refusal after
  // the handshake), so that case is left out.
  it('with --tlsverify: connects with a client certificate', async () => {
    await roundTrip(await connect({ servers: [mutual.url], tls: { caFile: tls.caFile, certFile: tls.clientCertFile, keyFile: tls.clientKeyFile } }));
  });

  it('TLS asked for, a server without it: refused (no silent plain-text fallback)', async () => {
    const plain = await startNats();
    try {
      const err = await connectError({ servers: [plain.url], tls: {} });
      expect(err.message).toContain(`connect to ${plain.url}`);
    } finally {
      await plain.stop();
    }
  });
});

describe('what the bus logs and throws never carries a URL\'s userinfo', () => {
  it('redactServers hides user:password@ and token@ in lists and in URLs that do not parse', () => {
    expect(redactServers('nats://alice:pw@a:4222,tls://tok@b:4222, nats://c:4222')).toBe('nats://<redacted>@a:4222,tls://<redacted>@b:4222, nats://c:4222');
    expect(redactServers('not a url nats://u:p@@x')).not.toContain('u:p');
  });
});
