// Redis connection settings that leaked a password into a config error, or that were accepted
// and then did something other than what they say (found by the review of P120-P123; P125).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeNatsCreds } from '@cordum/testing';
import { ConfigError, commonEnvSchema, loadConfig, natsConnectionConfig, redisConnectionConfig } from '../src';

function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

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
  it('is accepted at load; the bus must then use it as it is (libs/bus creds-reload.spec)', () => {
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
