// P120, P123 and P124 together on one 6-node Redis Cluster with TLS and a password:
// rediss:// REDIS_URL credentials reach every node over TLS; a wrong password is reported
// without echoing it; a frozen master still times commands out (the patched timeout on the
// cluster's own reject path).
import { makeTestTls, startRedisCluster, waitFor, type TestCluster, type TestTls } from '@cordum/testing';
import { closeRedis, createRedis, isRedisAuthError, masters, pingRedis, type RedisClient, type RedisConnOptions } from '../src';

const PASSWORD = 'rev-pw-31x';

describe('a TLS + password Redis Cluster', () => {
  let tls: TestTls;
  let cluster: TestCluster;
  const open: RedisClient[] = [];
  const client = (url: string, events?: RedisConnOptions['events']): RedisClient => {
    const c = createRedis({ url, clusterAddresses: cluster.addresses.split(','), tls: { caFile: tls.caFile }, poolSize: 4, minIdleConns: 1, commandTimeoutMs: 300, ...(events ? { events } : {}) });
    open.push(c);
    return c;
  };
  // The 300 ms command timeout runs from the call (P46), so a PING sent while six TLS handshakes
  // and CLUSTER SLOTS are still under way can time out on a loaded machine (seen in CI): wait for
  // the first PONG, then assert on the connected client.
  const connected = (c: RedisClient): Promise<true> => waitFor(async () => (await pingRedis(c, 1000)) || null, 20_000, { message: 'the cluster answers PING' });

  beforeAll(async () => {
    tls = makeTestTls();
    cluster = await startRedisCluster({ password: PASSWORD, tls: { tls } });
  }, 120_000);
  afterAll(async () => {
    await Promise.all(open.map((c) => closeRedis(c)));
    await cluster.stop();
    tls.remove();
  });

  it('rediss://:<password>@ (host unused) logs in on every master over TLS', async () => {
    const c = client(`rediss://:${PASSWORD}@ignored.invalid:6379`);
    await connected(c);
    for (let i = 0; i < 30; i++) await c.set(`k${i}`, 'v');
    for (const n of masters(c)) {
      expect(await n.call('ACL', 'WHOAMI')).toBe('default');
      expect(n.stream.constructor.name).toBe('TLSSocket');
    }
  });

  it('a wrong password: an auth error, and no error text carries the password', async () => {
    const seen: Error[] = [];
    const c = client(`rediss://:wrong-${PASSWORD}@x:6379`, { error: (err) => void seen.push(err), restored: () => undefined });
    expect(await pingRedis(c, 1500)).toBe(false);
    await waitFor(() => seen.some((e) => isRedisAuthError(e)), 10_000, { message: 'an auth error' });
    const texts = seen.map((e) => `${e.message}\n${e.stack ?? ''}`).join('\n');
    expect(texts).not.toContain(PASSWORD);
  });

  it('a frozen master: its commands still time out (cluster reject path), the others answer', async () => {
    const c = client(`rediss://:${PASSWORD}@x:6379`);
    await connected(c);
    const m = masters(c)[0]!;
    const port = m.options.port;
    const node = cluster.nodes.find((n) => n.port === port)!;
    // A key on that master.
    let key = '';
    for (let i = 0; i < 1000 && key === ''; i++) {
      const k = `f${i}`;
      const slot = (await m.call('CLUSTER', 'KEYSLOT', k)) as number;
      const owner = (c as unknown as { slots: string[][] }).slots[slot]?.[0];
      if (owner?.endsWith(`:${port}`)) key = k;
    }
    expect(key).not.toBe('');
    await node.process.freeze();
    try {
      const t0 = Date.now();
      await expect(c.get(key)).rejects.toThrow('Command timed out');
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      node.process.thaw();
    }
    expect(await c.get(key)).toBeNull();
  }, 30_000);
});
