// Redis over TLS (`rediss://`, service-kit's REDIS_TLS_*): a standalone redis-server and a 6-node
// Redis Cluster whose ports, replication and cluster bus speak TLS only, with a throwaway CA.
// The client verifies the servers against the CA it is given (the system CAs otherwise), and
// presents a client certificate to a Redis that requires one (decisions.md P123).
import { Cluster } from 'ioredis';
import { makeTestTls, startRedis, startRedisCluster, waitFor, type TestCluster, type TestServer, type TestTls } from '@cordum/testing';
import { closeRedis, createRedis, defineScripts, KeyBuilder, masters, pingRedis, scriptSpec, type RedisClient, type RedisConnOptions } from '../src';

let tls: TestTls;
const open: RedisClient[] = [];
const client = (o: Pick<RedisConnOptions, 'url' | 'clusterAddresses' | 'tls'>, events?: RedisConnOptions['events']): RedisClient => {
  const c = createRedis({ ...o, poolSize: 4, minIdleConns: 1, ...(events ? { events } : {}) });
  open.push(c);
  return c;
};

beforeAll(() => {
  tls = makeTestTls();
});
afterAll(async () => {
  await Promise.all(open.map((c) => closeRedis(c)));
  tls.remove();
});

/** Errors the client reported, for a client that must fail. */
const failing = (): { events: NonNullable<RedisConnOptions['events']>; seen: Error[] } => {
  const seen: Error[] = [];
  return { seen, events: { error: (err) => void seen.push(err), restored: () => undefined } };
};

describe('a standalone Redis that speaks TLS only', () => {
  let redis: TestServer;
  beforeAll(async () => {
    redis = await startRedis({ tls: { tls } });
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('rediss:// with the CA: connects, verifies the server, runs commands', async () => {
    expect(redis.url).toMatch(/^rediss:\/\/127\.0\.0\.1:\d+$/);
    const c = client({ url: redis.url, clusterAddresses: [], tls: { caFile: tls.caFile } });
    expect(await pingRedis(c, 3000)).toBe(true);
    await c.set('tls:k', 'v');
    expect(await c.get('tls:k')).toBe('v');
  });

  it('a CA that did not sign the server: refused, the error says the certificate does not verify', async () => {
    const f = failing();
    const c = client({ url: redis.url, clusterAddresses: [], tls: { caFile: tls.otherCaFile } }, f.events);
    expect(await pingRedis(c, 1500)).toBe(false);
    await waitFor(() => f.seen.length > 0, 5000, { message: 'an error reported' });
    expect(f.seen[0]?.message).toMatch(/certificate/i);
  });

  it('plain text to the TLS port gets no answer', async () => {
    const c = client({ url: redis.url.replace('rediss://', 'redis://'), clusterAddresses: [] });
    expect(await pingRedis(c, 1500)).toBe(false);
  });
});

describe('a Redis that requires client certificates (tls-auth-clients yes)', () => {
  let redis: TestServer;
  beforeAll(async () => {
    redis = await startRedis({ tls: { tls, verifyClients: true } });
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('with the client certificate and key: connects', async () => {
    const c = client({ url: redis.url, clusterAddresses: [], tls: { caFile: tls.caFile, certFile: tls.clientCertFile, keyFile: tls.clientKeyFile } });
    expect(await pingRedis(c, 3000)).toBe(true);
  });

  it('without one: refused', async () => {
    const c = client({ url: redis.url, clusterAddresses: [], tls: { caFile: tls.caFile } });
    expect(await pingRedis(c, 1500)).toBe(false);
  });
});

describe('a 6-node Redis Cluster over TLS (clients, replication and the cluster bus)', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ tls: { tls } });
  }, 90_000);
  afterAll(async () => {
    await cluster.stop();
  });

  it('TLS to every node, the seeds and those learnt from CLUSTER SLOTS: keys and scripts on all three masters', async () => {
    const c = client({ url: '', clusterAddresses: cluster.addresses.split(','), tls: { caFile: tls.caFile } });
    expect(c).toBeInstanceOf(Cluster);
    expect(await pingRedis(c, 3000)).toBe(true);
    expect(masters(c)).toHaveLength(3);
    const kb = new KeyBuilder('tlsc');
    const runner = defineScripts(c, [scriptSpec('incrBoth-2.lua', "redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[2])")]);
    for (let i = 0; i < 30; i++) expect(await runner.run<number>('incrBoth', [kb.tagged('a', String(i)), kb.tagged('b', String(i))], [])).toBe(1);
    const sizes = await Promise.all(masters(c).map((n) => n.dbsize()));
    expect(sizes.every((n) => n > 0)).toBe(true);
  });

  it('without TLS the cluster is not usable', async () => {
    const c = client({ url: '', clusterAddresses: cluster.addresses.split(',') });
    expect(await pingRedis(c, 1500)).toBe(false);
  });
});
