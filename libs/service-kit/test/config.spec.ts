import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { makeNatsCreds } from '@cordum/testing';
import { z } from 'zod';
import {
  ConfigError,
  commonEnvSchema,
  createLogger,
  defaultInstanceId,
  exitOnConfigError,
  isSecretKey,
  loadConfig,
  logConfig,
  natsConnectionConfig,
  redisConnectionConfig,
  redactUrl,
  zAddr,
  ANY_HOST,
  formatAddr,
  listenHost,
  zBool,
  zCsv,
  zDuration,
  zJobTtl,
  zNumber,
  zCheckedString,
  zParsedString,
  MAX_TIMER_MS,
} from '../src';

function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig with commonEnvSchema', () => {
  it('applies the CONTRACT §1 defaults on an empty env', () => {
    const c = loadConfig(commonEnvSchema, {});
    expect(c).toEqual({
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_CLUSTER_ADDRESSES: [],
      REDIS_POOL_SIZE: 20,
      REDIS_MIN_IDLE_CONNS: 5,
      NATS_URL: ['nats://127.0.0.1:4222'],
      CORDUM_LOG_LEVEL: 'info',
    });
    expect(c.CORDUM_INSTANCE_ID).toBeUndefined();
  });

  it('parses explicit values, comma lists included', () => {
    const c = loadConfig(commonEnvSchema, {
      REDIS_URL: 'redis://:pw@redis.example:6380/1',
      REDIS_CLUSTER_ADDRESSES: '10.0.0.1:7000, 10.0.0.2:7001,',
      REDIS_POOL_SIZE: '50',
      REDIS_MIN_IDLE_CONNS: '0',
      NATS_URL: 'nats://a:4222,tls://b:4222',
      CORDUM_INSTANCE_ID: 'sched-1',
      CORDUM_LOG_LEVEL: 'debug',
    });
    expect(c).toEqual({
      REDIS_URL: 'redis://:pw@redis.example:6380/1',
      REDIS_CLUSTER_ADDRESSES: ['10.0.0.1:7000', '10.0.0.2:7001'],
      REDIS_POOL_SIZE: 50,
      REDIS_MIN_IDLE_CONNS: 0,
      NATS_URL: ['nats://a:4222', 'tls://b:4222'],
      CORDUM_INSTANCE_ID: 'sched-1',
      CORDUM_LOG_LEVEL: 'debug',
    });
  });

  it('treats empty strings as unset (compose `FOO=`)', () => {
    expect(loadConfig(commonEnvSchema, { REDIS_POOL_SIZE: '', CORDUM_LOG_LEVEL: '' }).REDIS_POOL_SIZE).toBe(20);
  });
});

describe('zNumber', () => {
  const schema = z.object({ RATE: zNumber({ min: 0.001, max: 1_000_000 }).default(5) });
  it('takes decimals, fractions and exponents within the bounds', () => {
    for (const [raw, n] of [['30', 30], [' 0.5 ', 0.5], ['.25', 0.25], ['1e3', 1000], ['1E-3', 0.001], ['1000000', 1_000_000]] as const) expect(loadConfig(schema, { RATE: raw }).RATE).toBe(n);
    expect(loadConfig(schema, {}).RATE).toBe(5);
    expect(loadConfig(schema, { RATE: '' }).RATE).toBe(5); // empty = unset
  });
  it.each(['abc', '0x10', 'Infinity', 'NaN', '1e-300', '0', '-1', '2e6', '1,5'])('refuses %j with one line naming the range', (raw) => {
    expect(configErrorOf(() => loadConfig(schema, { RATE: raw })).message).toBe(`invalid config: RATE must be a number from 0.001 to 1000000 (got "${raw}")`);
  });
});

describe('ConfigError messages are one line naming the variable', () => {
  it('bad integer', () => {
    const err = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_POOL_SIZE: 'abc' }));
    expect(err.message).toBe('invalid config: REDIS_POOL_SIZE must be a positive integer (got "abc")');
    expect(err.code).toBe('config_invalid');
  });

  it('zero is not a positive integer', () => {
    expect(configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_POOL_SIZE: '0' })).message).toContain('REDIS_POOL_SIZE must be a positive integer');
  });

  it('bad URL scheme', () => {
    expect(configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_URL: 'http://127.0.0.1:6379' })).message).toBe(
      'invalid config: REDIS_URL must be a URL starting with redis:// or rediss:// (got "http://127.0.0.1:6379")',
    );
    expect(configErrorOf(() => loadConfig(commonEnvSchema, { NATS_URL: 'nats://a:4222,garbage' })).message).toMatch(/^invalid config: NATS_URL must be a comma list of URLs/);
  });

  it('bad cluster address list', () => {
    expect(configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 'a:1,nohostport' })).message).toContain('REDIS_CLUSTER_ADDRESSES must be a comma list of host:port (bad entry "nohostport")');
    // A bad entry with a password in it is named without the password.
    const bad = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 'a:1,redis://:pw-9@' })).message;
    expect(bad).not.toContain('pw-9');
  });

  it.each([
    // a comma or a space inside a password ended the redaction (P299)
    ['NATS_URL', 'nats://alice:s3c,ret@nats:4222', ['s3c', 'ret', 'alice']],
    ['REDIS_URL', 'redis://:ab%xy,z@host:6379', ['ab%xy', 'z@']],
    ['REDIS_URL', 'redis://:qx sqy%zz@host', ['qx', 'sqy']],
    ['REDIS_CLUSTER_ADDRESSES', 'redis://:p,w@h:6379', [':p', 'w@']],
  ])('%s=%s: no part of the password in the error', (name, value, secrets) => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { [name]: value })).message;
    expect(msg).toContain(name);
    for (const s of secrets) expect(msg).not.toContain(s);
  });

  it('cluster credentials come from REDIS_URL: an entry with a user or password is refused, without echoing it', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 'redis://:s3cret@10.0.0.1:7000,10.0.0.2:7001' })).message;
    expect(msg).toBe(
      'invalid config: REDIS_CLUSTER_ADDRESSES entries carry no user or password: put them in REDIS_URL (redis://:<password>@<any node>:6379), whose credentials the cluster client sends to every node (got "redis://<redacted>@10.0.0.1:7000,10.0.0.2:7001")',
    );
    expect(msg).not.toContain('s3cret');
    // ... and REDIS_URL's own credentials with a cluster are what the client uses: accepted.
    expect(loadConfig(commonEnvSchema, { REDIS_URL: 'redis://app:s3cret@10.0.0.1:7000', REDIS_CLUSTER_ADDRESSES: '10.0.0.1:7000' }).REDIS_CLUSTER_ADDRESSES).toEqual(['10.0.0.1:7000']);
  });

  it('bad enum', () => {
    expect(configErrorOf(() => loadConfig(commonEnvSchema, { CORDUM_LOG_LEVEL: 'loud' })).message).toBe(
      'invalid config: CORDUM_LOG_LEVEL must be one of debug|info|warn|error (got "loud")',
    );
  });

  it('bad duration', () => {
    const schema = z.object({ SCHEDULER_CONFIG_RELOAD_INTERVAL: zDuration.default(30_000) });
    expect(configErrorOf(() => loadConfig(schema, { SCHEDULER_CONFIG_RELOAD_INTERVAL: '5 minutes' })).message).toBe(
      'invalid config: SCHEDULER_CONFIG_RELOAD_INTERVAL must be a duration like 500ms, 30s or 5m (got "5 minutes")',
    );
    expect(loadConfig(schema, {}).SCHEDULER_CONFIG_RELOAD_INTERVAL).toBe(30_000);
    expect(loadConfig(z.object({ T: zDuration.prefault('5m') }), {}).T).toBe(300_000);
  });

  it('bad port', () => {
    const schema = z.object({ SCHEDULER_HTTP_ADDR: zAddr.prefault(':9090') });
    expect(configErrorOf(() => loadConfig(schema, { SCHEDULER_HTTP_ADDR: ':99999' })).message).toBe(
      'invalid config: SCHEDULER_HTTP_ADDR must be an address like host:port or :port (port 0-65535) (got ":99999")',
    );
    expect(configErrorOf(() => loadConfig(schema, { SCHEDULER_HTTP_ADDR: 'localhost' })).message).toContain('SCHEDULER_HTTP_ADDR must be an address');
    expect(loadConfig(schema, {}).SCHEDULER_HTTP_ADDR).toEqual({ host: '', port: 9090 });
  });

  it('missing required variable', () => {
    expect(configErrorOf(() => loadConfig(z.object({ SAFETY_POLICY_PATH: z.string() }), {})).message).toBe('invalid config: SAFETY_POLICY_PATH is required');
  });

  it('several bad variables stay on one line, and secrets are not echoed', () => {
    const schema = commonEnvSchema.extend({ CORDUM_API_KEY: z.string().min(16) });
    const msg = configErrorOf(() => loadConfig(schema, { REDIS_POOL_SIZE: '-3', CORDUM_LOG_LEVEL: 'x\ny', CORDUM_API_KEY: 'hunter2' })).message;
    expect(msg.split('\n')).toHaveLength(1);
    expect(msg).toContain('REDIS_POOL_SIZE');
    expect(msg).toContain('CORDUM_LOG_LEVEL');
    expect(msg).toContain('CORDUM_API_KEY');
    expect(msg).not.toContain('hunter2');
  });

  it('a key file path is echoed (it is no secret); the keys themselves are not', () => {
    const schema = z.object({
      CAP_VERIFY_KEY_FILE: zParsedString((path) => {
        throw new Error(`cannot read ${path}`);
      }).optional(),
      CORDUM_API_KEY: z.string().min(16).optional(),
      CORDUM_API_KEYS: z.string().min(16).optional(),
    });
    const msg = configErrorOf(() => loadConfig(schema, { CAP_VERIFY_KEY_FILE: '/etc/cordum/verify.pem', CORDUM_API_KEY: 'hunter2', CORDUM_API_KEYS: 'hunter3' })).message;
    expect(msg).toContain('CAP_VERIFY_KEY_FILE cannot read /etc/cordum/verify.pem (got "/etc/cordum/verify.pem")');
    expect(msg).toContain('CORDUM_API_KEY is invalid');
    expect(msg).not.toMatch(/hunter2|hunter3/);
    expect(msg.match(/"<redacted>"/g)).toHaveLength(2);
  });

  it('isSecretKey: API keys, passwords, tokens; not a *_FILE path or a ...MetaKey name', () => {
    for (const k of ['CORDUM_API_KEY', 'CORDUM_API_KEYS', 'apiKeys', 'key', 'capSigningKey', 'capVerifyKey', 'jwtSecret', 'REDIS_PASSWORD', 'authToken', 'CREDENTIALS']) expect({ k, secret: isSecretKey(k) }).toEqual({ k, secret: true });
    for (const k of ['CAP_VERIFY_KEY_FILE', 'CAP_SIGNING_KEY_FILE', 'keyFile', 'fileHashMetaKey', 'REDIS_POOL_SIZE', 'SAFETY_POLICY_PATH']) expect({ k, secret: isSecretKey(k) }).toEqual({ k, secret: false });
  });

  it('a config error never echoes a URL password, even in a value that does not parse', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_URL: 'redis://:s3cretpw@redis.internal:6379x', NATS_URL: 'nats://u:pw2@n:4222,bad' })).message;
    expect(msg).toContain('REDIS_URL');
    expect(msg).toContain('"redis://<redacted>@redis.internal:6379x"');
    expect(msg).toContain('NATS_URL');
    expect(msg).not.toMatch(/s3cretpw|pw2/);
  });
});

describe('zod helpers', () => {
  it('zDuration', () => {
    expect(zDuration.parse('500ms')).toBe(500);
    expect(zDuration.parse('30s')).toBe(30_000);
    expect(zDuration.parse('5m')).toBe(300_000);
    expect(zDuration.parse('1h')).toBe(3_600_000);
    expect(zDuration.parse('1.5s')).toBe(1500);
    expect(zDuration.parse('250')).toBe(250);
    expect(zDuration.parse('0')).toBe(0);
    expect(zDuration.parse(42)).toBe(42);
    expect(zDuration.parse('1d')).toBe(86_400_000);
    expect(zDuration.parse('24d')).toBe(24 * 86_400_000);
    for (const bad of ['', '5 minutes', '-1s', '1w', 's', '1.2.3s']) expect(zDuration.safeParse(bad).success).toBe(false);
  });

  it('zDuration refuses what a Node timer cannot wait (it would fire after 1 ms, an interval would spin)', () => {
    expect(zDuration.parse(MAX_TIMER_MS)).toBe(MAX_TIMER_MS);
    for (const long of ['25d', '1000h', MAX_TIMER_MS + 1]) expect(zDuration.safeParse(long).success).toBe(false);
    expect(() => loadConfig(z.object({ CORDUM_CONFIG_RELOAD_INTERVAL: zDuration }), { CORDUM_CONFIG_RELOAD_INTERVAL: '720h' })).toThrow(
      'invalid config: CORDUM_CONFIG_RELOAD_INTERVAL must be at most 24d (Node timers overflow beyond) (got "720h")',
    );
  });

  it('zJobTtl: 1m to 30d, default 7d', () => {
    const schema = z.object({ JOB_TTL: zJobTtl });
    expect(loadConfig(schema, {}).JOB_TTL).toBe(7 * 86_400_000);
    expect(loadConfig(schema, { JOB_TTL: '30d' }).JOB_TTL).toBe(30 * 86_400_000);
    expect(loadConfig(schema, { JOB_TTL: '1m' }).JOB_TTL).toBe(60_000);
    for (const bad of ['0', '59s', '31d']) expect(() => loadConfig(schema, { JOB_TTL: bad })).toThrow(/^invalid config: JOB_TTL must be (between 1m and 30d|at most 30d)/);
  });

  it('zCheckedString reports the checker\'s message as the variable\'s one line', () => {
    const schema = z.object({ ADDR: zCheckedString((v) => {
      if (!v.includes(':')) throw new Error(`no port in ${JSON.stringify(v)}`);
    }) });
    expect(loadConfig(schema, { ADDR: 'a:1' }).ADDR).toBe('a:1');
    expect(() => loadConfig(schema, { ADDR: 'a' })).toThrow('invalid config: ADDR no port in "a"');
    // zParsedString keeps what the parser made of it (parsed once, at load)
    let calls = 0;
    const parsed = z.object({ N: zParsedString((v) => (calls++, v.length)) });
    expect(loadConfig(parsed, { N: 'abcd' }).N).toBe(4);
    expect(calls).toBe(1);
  });

  it('zAddr', () => {
    expect(zAddr.parse('localhost:8081')).toEqual({ host: 'localhost', port: 8081 });
    // P240: ":port" is any host (dual stack), not 0.0.0.0 (IPv4 only), which stays as written
    expect(zAddr.parse(':8081')).toEqual({ host: ANY_HOST, port: 8081 });
    expect(zAddr.parse('0.0.0.0:8081')).toEqual({ host: '0.0.0.0', port: 8081 });
    expect(listenHost(zAddr.parse(':8081'))).toBeUndefined();
    expect(listenHost(zAddr.parse('0.0.0.0:8081'))).toBe('0.0.0.0');
    expect([':8081', '0.0.0.0:8081', '[::1]:9090', 'localhost:1'].map((a) => formatAddr(zAddr.parse(a)))).toEqual([':8081', '0.0.0.0:8081', '[::1]:9090', 'localhost:1']);
    expect(zAddr.parse('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(zAddr.parse('[::1]:9090')).toEqual({ host: '::1', port: 9090 });
    for (const bad of ['8081', 'host:', 'host:70000', 'a:b', 'a b:1']) expect(zAddr.safeParse(bad).success).toBe(false);
  });

  it('zBool', () => {
    for (const t of ['true', 'TRUE', '1', 'yes']) expect(zBool.parse(t)).toBe(true);
    for (const f of ['false', '0', 'no']) expect(zBool.parse(f)).toBe(false);
    expect(zBool.safeParse('maybe').success).toBe(false);
  });

  it('zCsv', () => {
    expect(zCsv.parse('job.echo, job.default,,')).toEqual(['job.echo', 'job.default']);
    expect(zCsv.parse(undefined)).toEqual([]);
  });

  it('defaultInstanceId is <service>-<hostname>-<pid>', () => {
    expect(defaultInstanceId('scheduler')).toBe(`scheduler-${hostname()}-${process.pid}`);
  });
});

describe('secrets stay out of logs', () => {
  it('redactUrl hides passwords only', () => {
    expect(redactUrl('redis://:s3cret@redis:6379/0')).toBe('redis://:***@redis:6379/0');
    expect(redactUrl('nats://user:pw@nats:4222')).toBe('nats://user:***@nats:4222');
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    expect(redactUrl('not a url')).toBe('not a url');
  });

  it('logConfig redacts secret-looking keys and URL passwords', () => {
    const lines: string[] = [];
    const logger = createLogger({ service: 't', instance: 'i', write: (l) => lines.push(l) });
    logConfig(logger, {
      REDIS_URL: 'redis://:pw-in-url@h:1',
      CORDUM_API_KEY: 'key-value',
      nested: { jwtSecret: 'secret-value', dbPassword: 'pass-value', authToken: 'token-value' },
      REDIS_POOL_SIZE: 20,
    });
    expect(lines).toHaveLength(1);
    const out = lines[0]!;
    for (const s of ['pw-in-url', 'key-value', 'secret-value', 'pass-value', 'token-value']) expect(out).not.toContain(s);
    const rec = JSON.parse(out) as { config: { REDIS_POOL_SIZE: number; CORDUM_API_KEY: string; REDIS_URL: string } };
    expect(rec.config.REDIS_POOL_SIZE).toBe(20);
    expect(rec.config.CORDUM_API_KEY).toBe('<redacted>');
    expect(rec.config.REDIS_URL).toBe('redis://:***@h:1');
  });

  it('logConfig shows key file paths and meta key names, and still hides the keys', () => {
    const lines: string[] = [];
    const logger = createLogger({ service: 't', instance: 'i', write: (l) => lines.push(l) });
    logConfig(logger, {
      CAP_SIGNING_KEY_FILE: '/etc/cordum/signing.pem',
      capSigningKey: 'private-key-value',
      apiKeys: [{ key: 'api-key-value', tenant: 't' }],
      bootstrapFiles: [{ section: 'pools', fileHashMetaKey: '_poolsFileHash' }],
    });
    const rec = JSON.parse(lines[0]!) as { config: Record<string, unknown> };
    expect(rec.config).toEqual({
      CAP_SIGNING_KEY_FILE: '/etc/cordum/signing.pem',
      capSigningKey: '<redacted>',
      apiKeys: '<redacted>',
      bootstrapFiles: [{ section: 'pools', fileHashMetaKey: '_poolsFileHash' }],
    });
  });
});

describe('exitOnConfigError', () => {
  it('prints one line without a stack and exits 2', () => {
    const writes: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    const codes: number[] = [];
    try {
      exitOnConfigError(
        () => void loadConfig(commonEnvSchema, { REDIS_POOL_SIZE: 'abc' }),
        (c) => codes.push(c),
      );
    } finally {
      spy.mockRestore();
    }
    expect(codes).toEqual([2]);
    expect(writes).toEqual(['invalid config: REDIS_POOL_SIZE must be a positive integer (got "abc")\n']);
  });
});

// Redis connection settings that leaked a password into a config error, or that were accepted
// and then did something other than what they say (found by the review of P120-P123; P125).
describe('a Redis password never reaches a config error', () => {
  it('REDIS_URL whose password holds an unescaped "/" (an invalid URL)', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_URL: 'redis://:pa/ss-9f2@redis:6379' })).message;
    expect(msg).toContain('REDIS_URL');
    expect(msg).not.toContain('pa/ss-9f2');
    expect(msg).not.toContain('ss-9f2');
  });

  it('a scheme-less REDIS_CLUSTER_ADDRESSES entry with user:password@', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 'app:s3cret-77@10.0.0.1:7000,10.0.0.2:7001' })).message;
    expect(msg).toContain('REDIS_CLUSTER_ADDRESSES');
    expect(msg).not.toContain('s3cret-77');
  });

  it('a scheme-less entry with a bare secret@ is refused, not read as host "secret@10.0.0.1"', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 's3cret-77@10.0.0.1:7000' })).message;
    expect(msg).not.toContain('s3cret-77');
  });
});

describe('Redis settings accepted at load but wrong at connect', () => {
  it('a REDIS_URL password with a bad %-escape is a config error (createRedis throws URIError otherwise)', () => {
    const msg = configErrorOf(() => loadConfig(commonEnvSchema, { REDIS_URL: 'redis://:100%sure@redis:6379', REDIS_CLUSTER_ADDRESSES: '10.0.0.1:7000' })).message;
    expect(msg).toContain('REDIS_URL has a user or password with a bad %-escape');
    expect(msg).not.toContain('100%sure');
    // escaped, it is fine
    expect(loadConfig(commonEnvSchema, { REDIS_URL: 'redis://:100%25sure@redis:6379' }).REDIS_URL).toBe('redis://:100%25sure@redis:6379');
  });

  it('cluster entries mixing redis:// and rediss://, or redis:// entries under a rediss:// REDIS_URL, are refused (every node silently got TLS)', () => {
    const load = (env: Record<string, string>): string => configErrorOf(() => redisConnectionConfig(loadConfig(commonEnvSchema, env))).message;
    expect(load({ REDIS_CLUSTER_ADDRESSES: 'redis://10.0.0.1:7000,rediss://10.0.0.2:7001' })).toBe(
      'invalid config: REDIS_CLUSTER_ADDRESSES mixes redis:// and rediss:// entries: the cluster client uses TLS for every node or for none (got "redis://10.0.0.1:7000,rediss://10.0.0.2:7001")',
    );
    expect(load({ REDIS_URL: 'rediss://:pw@any:6379', REDIS_CLUSTER_ADDRESSES: 'redis://10.0.0.1:7000,10.0.0.2:7001' })).toBe(
      'invalid config: REDIS_URL is rediss:// but REDIS_CLUSTER_ADDRESSES has redis:// entries: the cluster client uses TLS for every node or for none',
    );
    // host:port entries take REDIS_URL's scheme; rediss:// entries under the default redis:// REDIS_URL are TLS.
    expect(redisConnectionConfig(loadConfig(commonEnvSchema, { REDIS_URL: 'rediss://:pw@any:6379', REDIS_CLUSTER_ADDRESSES: '10.0.0.1:7000' })).tls).toEqual({});
    expect(redisConnectionConfig(loadConfig(commonEnvSchema, { REDIS_CLUSTER_ADDRESSES: 'rediss://10.0.0.1:7000,10.0.0.2:7001' })).tls).toEqual({});
  });
});

describe('NATS_CREDS_FILE ending with the seed block (no trailing banner)', () => {
  it('is accepted at load; the bus must then use it as it is (libs/bus auth.spec, operator mode)', () => {
    const creds = makeNatsCreds();
    try {
      const text = readFileSync(creds.credsFile, 'utf8');
      const end = '------END USER NKEY SEED------';
      const file = join(creds.dir, 'no-banner.creds');
      writeFileSync(file, text.slice(0, text.indexOf(end) + end.length) + '\n');
      const c = natsConnectionConfig(loadConfig(commonEnvSchema, { NATS_CREDS_FILE: file }));
      expect(c.credentialsFile).toBe(file);
      expect(c.credentials?.endsWith(`${end}\n`)).toBe(true);
    } finally {
      creds.remove();
    }
  });
});
