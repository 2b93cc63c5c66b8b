// A Redis Cluster that requires a password (`requirepass` and `masterauth` on every node, as
// deploy/k8s/redis-cluster runs it). The cluster client sends REDIS_URL's user and password to
// every node it connects to, the seeds and those it learns from CLUSTER SLOTS; it used to send
// none, so such a cluster could not be used at all (decisions.md P117, P120).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { replaceFileWhole, startRedisCluster, waitFor, type TestCluster } from '@cordum/testing';
import { closeRedis, createRedis, defineScripts, isRedisAuthError, KeyBuilder, masters, pingRedis, scriptSpec, type RedisClient } from '../src';

const PASSWORD = 'cluster-pass-7';

describe('@cordum/redis on a password-protected 6-node Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;
  const open: RedisClient[] = [];
  const client = (url: string, events?: Parameters<typeof createRedis>[0]['events']): RedisClient => {
    const c = createRedis({ url, clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1, ...(events ? { events } : {}) });
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster({ password: PASSWORD });
    // The host of REDIS_URL is not used in cluster mode (port 1 answers nothing): only its credentials.
    redis = client(`redis://:${PASSWORD}@127.0.0.1:1`);
  }, 90_000);
  afterAll(async () => {
    await Promise.all(open.map((c) => closeRedis(c)));
    await cluster.stop();
  });

  it("logs in to every node with REDIS_URL's password: keys and scripts on all three masters", async () => {
    expect(redis).toBeInstanceOf(Cluster);
    expect(await pingRedis(redis, 3000)).toBe(true);
    expect(masters(redis)).toHaveLength(3);
    const kb = new KeyBuilder('auth');
    const runner = defineScripts(redis, [scriptSpec('incrBoth-2.lua', "redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[2])")]);
    const ids = Array.from({ length: 30 }, (_, i) => `id${i}`);
    for (const id of ids) expect(await runner.run<number>('incrBoth', [kb.tagged('a', id), kb.tagged('b', id)], [])).toBe(1);
    // Every master holds some of them (so every master's connection logged in).
    const sizes = await Promise.all(masters(redis).map((n) => n.dbsize()));
    expect(sizes.every((n) => n > 0)).toBe(true);
    // Each node says so itself: the client's connections are authenticated as the default user.
    for (const n of masters(redis)) expect(await n.call('ACL', 'WHOAMI')).toBe('default');
  });

  it('an ACL user given as redis://user:password@ logs in as that user on every node', async () => {
    // The same user on every node (ACL is per node), with percent-escapes in its password.
    const nodes = cluster.nodes.map((n) => createRedis({ url: n.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 }));
    try {
      await Promise.all(nodes.map((n) => n.call('ACL', 'SETUSER', 'cordum', 'on', '>p@ss:w/rd', '~*', '&*', '+@all')));
    } finally {
      await Promise.all(nodes.map((n) => closeRedis(n)));
    }
    const app = client(`redis://cordum:${encodeURIComponent('p@ss:w/rd')}@ignored.invalid:6379`);
    expect(await pingRedis(app, 3000)).toBe(true);
    await app.set('{acl}:k', 'v');
    expect(await app.get('{acl}:k')).toBe('v');
    for (const n of masters(app)) expect(await n.call('ACL', 'WHOAMI')).toBe('cordum');
  });

  it('no password, or a wrong one: not usable, and the reported error is an auth error (logged as refused credentials)', async () => {
    for (const [url, code] of [['', 'NOAUTH'], [`redis://:wrong-${PASSWORD}@127.0.0.1:1`, 'WRONGPASS']] as const) {
      const seen: Error[] = [];
      const c = client(url, { error: (err) => void seen.push(err), restored: () => undefined });
      expect(await pingRedis(c, 1500)).toBe(false);
      await waitFor(() => seen.some((e) => isRedisAuthError(e)), 10_000, { message: `an auth error reported for ${code}` });
      expect(seen.find((e) => isRedisAuthError(e))?.message).toMatch(new RegExp(`^${code}\\b`));
    }
  });

  // Last: it changes the nodes' password.
  it('REDIS_URL_FILE: a password rotated on every node and in the file is what every node client logs in with next, no restart (P128)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-url-'));
    const urlFile = join(dir, 'REDIS_URL');
    const nodes = cluster.nodes.map((n) => createRedis({ url: n.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 }));
    try {
      replaceFileWhole(urlFile, `redis://:${PASSWORD}@127.0.0.1:1\n`);
      const c = createRedis({ url: `redis://:${PASSWORD}@127.0.0.1:1`, urlFile, clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1 });
      open.push(c);
      expect(await pingRedis(c, 3000)).toBe(true);
      const kb = new KeyBuilder('rot');
      for (let i = 0; i < 30; i++) await c.set(kb.tagged('k', String(i)), 'before');
      const rotated = `rotated-${PASSWORD}`;
      await Promise.all(nodes.map((n) => n.config('SET', 'requirepass', rotated, 'masterauth', rotated)));
      replaceFileWhole(urlFile, `redis://:${rotated}@127.0.0.1:1\n`);
      // Every connection of the client is dropped (the node admins' own are kept).
      await Promise.all(nodes.map((n) => n.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')));
      await waitFor(async () => {
        try {
          for (let i = 0; i < 30; i++) await c.set(kb.tagged('k', String(i)), 'after');
          return true;
        } catch {
          return false;
        }
      }, 20_000, { message: 'every master written with the rotated password' });
      for (const n of masters(c)) expect(await n.call('ACL', 'WHOAMI')).toBe('default');
    } finally {
      await Promise.all(nodes.map((n) => closeRedis(n)));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
