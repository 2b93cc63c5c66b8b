import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNatsCreds, makeTestTls, type TestNatsCreds, type TestTls } from '@cordum/testing';
import { z } from 'zod';
import { ConfigError, commonEnvSchema, createLogger, exitOnConfigError, loadConfig, logConfig, natsConnectionConfig, redactUrl, redisConnectionConfig } from '../src';

// The NATS login and TLS variables, Redis TLS, and the secrets read from files (*_FILE).

let dir: string;
let tls: TestTls;
let creds: TestNatsCreds;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'service-kit-secrets-'));
  tls = makeTestTls();
  creds = makeNatsCreds();
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  tls.remove();
  creds.remove();
});

/** A file in the test dir holding `text`; returns its path. */
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** The NATS connection of `env` as every service builds it. */
const nats = (env: Record<string, string | undefined>) => natsConnectionConfig(loadConfig(commonEnvSchema, env));

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('natsConnectionConfig: the login', () => {
  it('no login by default: the servers as written', () => {
    expect(nats({})).toEqual({ servers: ['nats://127.0.0.1:4222'] });
    expect(nats({ NATS_URL: 'nats://a:4222, nats://b:4222' })).toEqual({ servers: ['nats://a:4222', 'nats://b:4222'] });
  });

  it('user:password@ in NATS_URL becomes user and password (percent-escapes decoded), and leaves the servers', () => {
    expect(nats({ NATS_URL: 'nats://alice:s3cret@a:4222,nats://alice:s3cret@b:4222' })).toEqual({ servers: ['nats://a:4222', 'nats://b:4222'], user: 'alice', password: 's3cret' });
    expect(nats({ NATS_URL: 'nats://al%40ice:p%3Aw%2Fd@n:4222' })).toEqual({ servers: ['nats://n:4222'], user: 'al@ice', password: 'p:w/d' });
  });

  it('NATS_CONNECT_TIMEOUT: each connect attempt\'s budget, 100ms to 60s; unset leaves the bus its default', () => {
    expect(nats({ NATS_CONNECT_TIMEOUT: '10s' })).toEqual({ servers: ['nats://127.0.0.1:4222'], connectTimeoutMs: 10_000 });
    expect(nats({})).not.toHaveProperty('connectTimeoutMs');
    expect(configError(() => nats({ NATS_CONNECT_TIMEOUT: '50ms' }))).toMatch(/^invalid config: NATS_CONNECT_TIMEOUT must be between 100ms and 60s/);
    expect(configError(() => nats({ NATS_CONNECT_TIMEOUT: '2m' }))).toMatch(/^invalid config: NATS_CONNECT_TIMEOUT must be between 100ms and 60s/);
    expect(configError(() => nats({ NATS_CONNECT_TIMEOUT: 'soon' }))).toMatch(/^invalid config: NATS_CONNECT_TIMEOUT must be a duration/);
  });

  it('token@ in NATS_URL is a token (the NATS clients\' convention)', () => {
    expect(nats({ NATS_URL: 'nats://t0ken@n:4222' })).toEqual({ servers: ['nats://n:4222'], token: 't0ken' });
  });

  it('NATS_USER with NATS_PASSWORD or NATS_PASSWORD_FILE (trailing line break dropped)', () => {
    expect(nats({ NATS_USER: 'alice', NATS_PASSWORD: 'pw' })).toEqual({ servers: ['nats://127.0.0.1:4222'], user: 'alice', password: 'pw' });
    // The file's path goes along: the NATS client reads it again at each reconnect (a rotated secret).
    expect(nats({ NATS_USER: 'alice', NATS_PASSWORD_FILE: file('pw', 'from-file\n') })).toEqual({ servers: ['nats://127.0.0.1:4222'], user: 'alice', password: 'from-file', passwordFile: join(dir, 'pw') });
  });

  it('NATS_TOKEN or NATS_TOKEN_FILE', () => {
    expect(nats({ NATS_TOKEN: 'tok' })).toMatchObject({ token: 'tok' });
    expect(nats({ NATS_TOKEN_FILE: file('tok', 'tok-from-file\r\n') })).toEqual({ servers: ['nats://127.0.0.1:4222'], token: 'tok-from-file', tokenFile: join(dir, 'tok') });
  });

  it('NATS_CREDS_FILE: the file is read and checked at start', () => {
    const c = nats({ NATS_CREDS_FILE: creds.credsFile });
    expect(c.credentials).toContain('-----BEGIN NATS USER JWT-----');
    expect(c.credentialsFile).toBe(creds.credsFile);
    expect(configError(() => nats({ NATS_CREDS_FILE: file('bad.creds', 'not creds SUAXXXX') }))).toMatch(/^invalid config: NATS_CREDS_FILE ".*bad\.creds" is not a NATS credentials file \(a user JWT block, then a user nkey seed block\)$/);
  });

  it.each<[Record<string, string>, string]>([
    [{ NATS_URL: 'nats://alice:pw@n:4222', NATS_USER: 'bob', NATS_PASSWORD: 'pw2' }, 'a user:password in NATS_URL and NATS_USER are set together: log in to NATS one way (a user and password, a token, or NATS_CREDS_FILE)'],
    [{ NATS_URL: 'nats://tok@n:4222', NATS_TOKEN: 'tok2' }, 'a token in NATS_URL and NATS_TOKEN(_FILE) are set together'],
    [{ NATS_USER: 'alice', NATS_PASSWORD: 'pw', NATS_TOKEN: 'tok' }, 'NATS_USER and NATS_TOKEN(_FILE) are set together'],
    [{ NATS_TOKEN: 'tok', NATS_CREDS_FILE: 'CREDS' }, 'NATS_TOKEN(_FILE) and NATS_CREDS_FILE are set together'],
    [{ NATS_USER: 'alice' }, 'NATS_USER is set without NATS_PASSWORD or NATS_PASSWORD_FILE'],
    [{ NATS_PASSWORD: 'pw' }, 'NATS_PASSWORD(_FILE) is set without NATS_USER'],
    [{ NATS_URL: 'nats://alice:pw@a:4222,nats://b:4222' }, 'NATS_URL entries carry different credentials'],
    [{ NATS_URL: 'nats://alice:pw@a:4222,nats://alice:pw2@b:4222' }, 'NATS_URL entries carry different credentials'],
    [{ NATS_URL: 'nats://:pw@a:4222' }, 'NATS_URL has a password without a user'],
  ])('%j: one readable line that echoes no secret', (env, expected) => {
    const e = { ...env, ...(env['NATS_CREDS_FILE'] ? { NATS_CREDS_FILE: creds.credsFile } : {}) };
    const msg = configError(() => nats(e));
    expect(msg).toContain(`invalid config: ${expected}`);
    expect(msg.split('\n')).toHaveLength(1);
    expect(msg).not.toMatch(/pw|tok\b|tok2|SU[A-Z2-7]{20}/);
  });
});

describe('secrets read from files (*_FILE)', () => {
  it('NATS_PASSWORD and NATS_PASSWORD_FILE both set, an unreadable file, an empty file: config errors naming the variable', () => {
    const pw = file('pw2', 'x');
    expect(configError(() => nats({ NATS_USER: 'a', NATS_PASSWORD: 'y', NATS_PASSWORD_FILE: pw }))).toBe('invalid config: NATS_PASSWORD and NATS_PASSWORD_FILE are both set: set one');
    expect(configError(() => nats({ NATS_USER: 'a', NATS_PASSWORD_FILE: join(dir, 'missing') }))).toBe(`invalid config: NATS_PASSWORD_FILE cannot read ${JSON.stringify(join(dir, 'missing'))}: ENOENT`);
    expect(configError(() => nats({ NATS_TOKEN_FILE: dir }))).toBe(`invalid config: NATS_TOKEN_FILE cannot read ${JSON.stringify(dir)}: EISDIR`);
    expect(configError(() => nats({ NATS_TOKEN_FILE: file('empty', '\n') }))).toBe(`invalid config: NATS_TOKEN_FILE names an empty file ${JSON.stringify(join(dir, 'empty'))}`);
  });

  it('an unreadable file (no permission) is a config error too', () => {
    if (process.getuid?.() === 0) return; // root reads anything
    const p = file('noperm', 'x');
    chmodSync(p, 0o000);
    expect(configError(() => nats({ NATS_TOKEN_FILE: p }))).toContain('NATS_TOKEN_FILE cannot read');
  });

  it('REDIS_URL_FILE stands for REDIS_URL; its value is validated as REDIS_URL and never echoed', () => {
    expect(loadConfig(commonEnvSchema, { REDIS_URL_FILE: file('redis-url', 'redis://:pw@redis:6379/0\n') }).REDIS_URL).toBe('redis://:pw@redis:6379/0');
    expect(configError(() => loadConfig(commonEnvSchema, { REDIS_URL: 'redis://a:1', REDIS_URL_FILE: file('redis-url2', 'redis://b:1') }))).toBe('invalid config: REDIS_URL and REDIS_URL_FILE are both set: set one');
    const msg = configError(() => loadConfig(commonEnvSchema, { REDIS_URL_FILE: file('redis-bad', 'http//oops-s3cret') }));
    expect(msg).toBe('invalid config: REDIS_URL (read from REDIS_URL_FILE) must be a URL starting with redis:// or rediss:// (got "<redacted>")');
  });

  it('REDIS_URL_FILE is kept and handed to the Redis client, which reads its password again at each connect (P128)', () => {
    const path = file('redis-url-kept', 'redis://:pw@redis:6379/0\n');
    expect(redisConnectionConfig(loadConfig(commonEnvSchema, { REDIS_URL_FILE: path }))).toMatchObject({ url: 'redis://:pw@redis:6379/0', urlFile: path });
    expect(redisConnectionConfig(loadConfig(commonEnvSchema, { REDIS_URL: 'redis://:pw@redis:6379/0' }))).not.toHaveProperty('urlFile');
  });

  it('an app adds its own file variables; other problems of the same env stay on the one line', () => {
    const schema = commonEnvSchema.extend({ CORDUM_API_KEY: z.string().min(8) });
    const opts = { secretFiles: { CORDUM_API_KEY: 'CORDUM_API_KEY_FILE' } };
    expect(loadConfig(schema, { CORDUM_API_KEY_FILE: file('key', 'a-long-api-key\n') }, opts).CORDUM_API_KEY).toBe('a-long-api-key');
    const msg = configError(() => loadConfig(schema, { CORDUM_API_KEY_FILE: join(dir, 'nope'), REDIS_POOL_SIZE: '0' }, opts));
    expect(msg).toBe(`invalid config: CORDUM_API_KEY_FILE cannot read ${JSON.stringify(join(dir, 'nope'))}: ENOENT; REDIS_POOL_SIZE must be a positive integer (got "0")`);
  });

  it('a schema without the variable does not read its file (runService\'s own early load)', () => {
    expect(loadConfig(commonEnvSchema.pick({ CORDUM_LOG_LEVEL: true }), { REDIS_URL_FILE: join(dir, 'nope') })).toEqual({ CORDUM_LOG_LEVEL: 'info' });
  });

  it('a conflict exits 2 with the one line, as any config error', () => {
    const writes: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    const codes: number[] = [];
    try {
      exitOnConfigError(() => void nats({ NATS_URL: 'nats://alice:s3cret@n:4222', NATS_USER: 'alice', NATS_PASSWORD: 's3cret' }), (c) => codes.push(c));
    } finally {
      spy.mockRestore();
    }
    expect(codes).toEqual([2]);
    expect(writes).toEqual(['invalid config: a user:password in NATS_URL and NATS_USER are set together: log in to NATS one way (a user and password, a token, or NATS_CREDS_FILE)\n']);
  });
});

describe('natsConnectionConfig: TLS', () => {
  it('none by default; any NATS_TLS_* variable or a tls:// server requires it', () => {
    expect(nats({}).tls).toBeUndefined();
    expect(nats({ NATS_URL: 'tls://n:4222' }).tls).toEqual({});
    expect(nats({ NATS_TLS_CA_FILE: tls.caFile }).tls).toEqual({ caFile: tls.caFile });
    expect(nats({ NATS_TLS_CA_FILE: tls.caFile, NATS_TLS_CERT_FILE: tls.clientCertFile, NATS_TLS_KEY_FILE: tls.clientKeyFile }).tls).toEqual({ caFile: tls.caFile, certFile: tls.clientCertFile, keyFile: tls.clientKeyFile });
  });

  it('files are checked at start: unreadable, not PEM, half a pair, a key that is not the certificate\'s', () => {
    expect(configError(() => nats({ NATS_TLS_CA_FILE: join(dir, 'nope.pem') }))).toContain(`NATS_TLS_CA_FILE cannot read ${JSON.stringify(join(dir, 'nope.pem'))}: ENOENT`);
    expect(configError(() => nats({ NATS_TLS_CA_FILE: file('junk.pem', 'junk') }))).toContain('NATS_TLS_CA_FILE');
    expect(configError(() => nats({ NATS_TLS_CA_FILE: file('junk.pem', 'junk') }))).toContain('holds no PEM certificate');
    // A bundle whose last certificate is cut (caught mid-write): its whole first block parses.
    const ca = readFileSync(tls.caFile, 'utf8');
    expect(configError(() => nats({ NATS_TLS_CA_FILE: file('cut.pem', `${ca}${ca.slice(0, 120)}`) }))).toContain('holds a PEM certificate cut short (2 BEGIN CERTIFICATE lines, 1 whole certificates)');
    expect(nats({ NATS_TLS_CA_FILE: file('two.pem', `${ca}${ca}`) }).tls).toEqual({ caFile: join(dir, 'two.pem') });
    expect(configError(() => nats({ NATS_TLS_KEY_FILE: tls.caFile }))).toContain('NATS_TLS_KEY_FILE');
    expect(configError(() => nats({ NATS_TLS_CERT_FILE: tls.clientCertFile }))).toBe('invalid config: NATS_TLS_CERT_FILE is set without NATS_TLS_KEY_FILE');
    expect(configError(() => nats({ NATS_TLS_KEY_FILE: tls.clientKeyFile }))).toBe('invalid config: NATS_TLS_KEY_FILE is set without NATS_TLS_CERT_FILE');
    expect(configError(() => nats({ NATS_TLS_CERT_FILE: tls.clientCertFile, NATS_TLS_KEY_FILE: tls.serverKeyFile }))).toContain('is not the key of the certificate in NATS_TLS_CERT_FILE');
  });
});

describe('the NATS login stays out of logs', () => {
  it('logConfig hides the password, the token and the creds; the user and file paths show', () => {
    const lines: string[] = [];
    const logger = createLogger({ service: 't', instance: 'i', write: (l) => lines.push(l) });
    logConfig(logger, { nats: nats({ NATS_URL: 'nats://alice:pw-in-url@n:4222' }), other: nats({ NATS_TOKEN: 'tok-value' }), third: nats({ NATS_CREDS_FILE: creds.credsFile, NATS_TLS_CA_FILE: tls.caFile }) });
    const out = lines[0]!;
    for (const s of ['pw-in-url', 'tok-value', 'BEGIN', 'SU']) expect(out).not.toContain(s);
    const rec = JSON.parse(out) as { config: Record<string, unknown> };
    expect(rec.config).toEqual({
      nats: { servers: ['nats://n:4222'], user: 'alice', password: '<redacted>' },
      other: { servers: ['nats://127.0.0.1:4222'], token: '<redacted>' },
      third: { servers: ['nats://127.0.0.1:4222'], credentials: '<redacted>', credentialsFile: creds.credsFile, tls: { caFile: tls.caFile } },
    });
  });

  it('redactUrl hides a token-only userinfo too', () => {
    expect(redactUrl('nats://t0ken@n:4222')).toBe('nats://***@n:4222');
    expect(redactUrl('nats://user:pw@n:4222')).toBe('nats://user:***@n:4222');
  });
});

describe('Redis TLS (rediss:// and REDIS_TLS_*)', () => {
  const redis = (env: Record<string, string>) => redisConnectionConfig(loadConfig(commonEnvSchema, env));
  const base = { poolSize: 20, minIdleConns: 5 };

  it('rediss:// alone: TLS verified against the system CAs; with REDIS_TLS_CA_FILE against that CA; redis:// has none', () => {
    expect(redis({})).toEqual({ url: 'redis://127.0.0.1:6379', clusterAddresses: [], ...base });
    expect(redis({ REDIS_URL: 'rediss://:pw@r:6380' })).toEqual({ url: 'rediss://:pw@r:6380', clusterAddresses: [], ...base, tls: {} });
    expect(redis({ REDIS_URL: 'rediss://r:6380', REDIS_TLS_CA_FILE: tls.caFile }).tls).toEqual({ caFile: tls.caFile });
    expect(redis({ REDIS_URL: 'rediss://r:6380', REDIS_TLS_CA_FILE: tls.caFile, REDIS_TLS_CERT_FILE: tls.clientCertFile, REDIS_TLS_KEY_FILE: tls.clientKeyFile }).tls).toEqual({
      caFile: tls.caFile,
      certFile: tls.clientCertFile,
      keyFile: tls.clientKeyFile,
    });
  });

  it('a cluster: TLS to every node when REDIS_URL or any entry is rediss://', () => {
    expect(redis({ REDIS_URL: 'rediss://:pw@any:6379', REDIS_CLUSTER_ADDRESSES: 'a:7000,b:7000' }).tls).toEqual({});
    expect(redis({ REDIS_CLUSTER_ADDRESSES: 'rediss://a:7000,b:7000', REDIS_TLS_CA_FILE: tls.caFile }).tls).toEqual({ caFile: tls.caFile });
    expect(redis({ REDIS_CLUSTER_ADDRESSES: 'a:7000,b:7000' }).tls).toBeUndefined();
  });

  it.each<[Record<string, string>, string]>([
    [{ REDIS_TLS_CA_FILE: 'CA' }, 'invalid config: REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://: write rediss:// to connect to Redis with TLS'],
    [{ REDIS_URL: 'rediss://r:6380', REDIS_TLS_CERT_FILE: 'CERT' }, 'invalid config: REDIS_TLS_CERT_FILE is set without REDIS_TLS_KEY_FILE'],
    [{ REDIS_URL: 'rediss://r:6380', REDIS_TLS_KEY_FILE: 'KEY' }, 'invalid config: REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE'],
  ])('%j: one readable line', (env, expected) => {
    const files: Record<string, string> = { CA: tls.caFile, CERT: tls.clientCertFile, KEY: tls.clientKeyFile };
    const e = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, files[v] ?? v]));
    expect(configError(() => redis(e))).toBe(expected);
  });

  it('a key that is not the certificate\'s, a file that is not PEM: config errors naming the variable', () => {
    expect(configError(() => redis({ REDIS_URL: 'rediss://r:6380', REDIS_TLS_CERT_FILE: tls.clientCertFile, REDIS_TLS_KEY_FILE: tls.serverKeyFile }))).toContain(
      'REDIS_TLS_KEY_FILE "' + tls.serverKeyFile + '" is not the key of the certificate in REDIS_TLS_CERT_FILE',
    );
    expect(configError(() => redis({ REDIS_URL: 'rediss://r:6380', REDIS_TLS_CA_FILE: file('not-pem', 'hello') }))).toContain('REDIS_TLS_CA_FILE');
  });
});
