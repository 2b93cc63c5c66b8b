// Redis over TLS (`rediss://`, service-kit's REDIS_TLS_*): a standalone redis-server and a 6-node
// Redis Cluster whose ports, replication and cluster bus speak TLS only, with a throwaway CA.
// The client verifies the servers against the CA it is given (the system CAs otherwise), and
// presents a client certificate to a Redis that requires one (decisions.md P123). The files are
// read again at each connect, so rotated ones are used from the next reconnect on (P126).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { makeTestTls, replaceFileWhole, startRedis, startRedisCluster, waitFor, type TestCluster, type TestServer, type TestTls } from '@cordum/testing';
import { closeRedis, createRedis, defineScripts, KeyBuilder, masters, pingRedis, redisLogEvents, RedisTlsFilesError, scriptSpec, type RedisClient, type RedisConnOptions } from '../src';

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

/** Copies `src` over `dest` the way a Kubernetes Secret volume changes (replaceFileWhole). */
const replaceFile = (src: string, dest: string): void => replaceFileWhole(dest, readFileSync(src));

/** A directory of the client's TLS files (ca.pem, cert.pem, key.pem), copied from `from`, that a test rotates. */
const clientFiles = (from: TestTls): { caFile: string; certFile: string; keyFile: string; put(t: TestTls): void; remove(): void } => {
  const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-tls-'));
  const f = { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') };
  const put = (t: TestTls): void => {
    replaceFile(t.caFile, f.caFile);
    replaceFile(t.clientCertFile, f.certFile);
    replaceFile(t.clientKeyFile, f.keyFile);
  };
  put(from);
  return { ...f, put, remove: () => rmSync(dir, { recursive: true, force: true }) };
};

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

describe('TLS files rotated while the client runs (P126)', () => {
  let redis: TestServer;
  let next: TestTls;
  let admin: Redis;
  beforeAll(async () => {
    redis = await startRedis({ tls: { tls, verifyClients: true } });
    next = makeTestTls();
    admin = new Redis(redis.url, { tls: { ca: [readFileSync(tls.caFile), readFileSync(next.caFile)], cert: readFileSync(tls.clientCertFile), key: readFileSync(tls.clientKeyFile) }, lazyConnect: true });
    await admin.connect();
  });
  afterAll(async () => {
    admin.disconnect();
    await redis.stop();
    next.remove();
  });

  /** Drops `c`'s connection on the server's side and waits until the client is back, on a new connection. */
  const reconnected = async (c: RedisClient): Promise<void> => {
    const before = (await c.client('ID')) as number;
    await admin.client('KILL', 'ID', String(before));
    await waitFor(async () => (await pingRedis(c, 500)) && ((await c.client('ID')) as number) !== before, 10_000, { message: 'the client back on a new connection' });
  };

  it('a new CA, server certificate and client certificate: the next connection trusts and presents the new ones, no restart', async () => {
    const files = clientFiles(tls);
    try {
      const c = client({ url: redis.url, clusterAddresses: [], tls: files });
      expect(await pingRedis(c, 3000)).toBe(true);
      // The server moves to the other CA, trusted by the admin connection only through both CAs:
      // from now on it presents a certificate the client's old CA file does not verify, and
      // accepts only client certificates of the new CA.
      files.put(next);
      await admin.config('SET', 'tls-cert-file', next.serverCertFile, 'tls-key-file', next.serverKeyFile, 'tls-ca-cert-file', next.caFile);
      await reconnected(c);
      await c.set('tls:rotated', '1');
      expect(await c.get('tls:rotated')).toBe('1');
    } finally {
      files.remove();
    }
  });

  it('files that cannot be used at a reconnect (a key that is not the certificate\'s, a chain or a CA bundle cut mid-write, a missing file): the last good ones are used, and reported', async () => {
    // The server is on `next` since the case before; the client starts with next's files.
    const files = clientFiles(next);
    try {
      const seen: Error[] = [];
      const logged: string[] = [];
      const log = redisLogEvents({ warn: (m) => void logged.push(m), info: () => undefined });
      const c = client({ url: redis.url, clusterAddresses: [], tls: files }, { error: (err, n) => (seen.push(err), log.error(err, n)), restored: () => undefined });
      expect(await pingRedis(c, 3000)).toBe(true);
      replaceFile(tls.clientKeyFile, files.keyFile);
      await reconnected(c);
      expect(seen.find((e) => e instanceof RedisTlsFilesError)?.message).toMatch(/is not the key of the certificate/);
      expect(logged).toContain('redis TLS files unusable at a connect; the last good ones are used');
      // A file caught mid-write: its first certificate whole, the next one cut. The first
      // certificate alone parses; the connect would fail on the cut one (a chain: OpenSSL refuses
      // it; a CA bundle: the cut CA is dropped and the server no longer verifies).
      const half = (pem: Buffer): Buffer => pem.subarray(0, Math.floor(pem.length / 2));
      replaceFileWhole(files.keyFile, readFileSync(next.clientKeyFile));
      replaceFileWhole(files.certFile, Buffer.concat([readFileSync(next.clientCertFile), half(readFileSync(next.caFile))]));
      await reconnected(c);
      replaceFileWhole(files.certFile, readFileSync(next.clientCertFile));
      replaceFileWhole(files.caFile, Buffer.concat([readFileSync(tls.otherCaFile), half(readFileSync(next.caFile))]));
      await reconnected(c);
      expect(seen.filter((e) => e instanceof RedisTlsFilesError && / holds a PEM certificate cut short$/.test(e.message))).toHaveLength(2);
      expect(seen.filter((e) => !(e instanceof RedisTlsFilesError))).toEqual([]);
      rmSync(files.caFile);
      await reconnected(c);
      expect(seen.filter((e) => e instanceof RedisTlsFilesError).map((e) => e.message).join('\n')).toMatch(/ENOENT/);
    } finally {
      files.remove();
    }
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

  it('a CA file that was wrong at start and is then fixed: every node connects, no restart (P126)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-tls-'));
    const caFile = join(dir, 'ca.pem');
    try {
      replaceFile(tls.otherCaFile, caFile);
      const c = client({ url: '', clusterAddresses: cluster.addresses.split(','), tls: { caFile } }, failing().events);
      expect(await pingRedis(c, 1500)).toBe(false);
      replaceFile(tls.caFile, caFile);
      await waitFor(() => pingRedis(c, 500), 15_000, { message: 'the cluster client connected with the fixed CA file' });
      // The other nodes' connections come up at their own reconnects (each reads the file again):
      // a write to a node whose attempt began before the fix may fail once (maxRetriesPerRequest 1;
      // seen on a loaded CI box as a TLS alert), so every master is waited for, not assumed.
      const kb = new KeyBuilder('tlsfix');
      await waitFor(
        async () => {
          for (let i = 0; i < 30; i++) await c.set(kb.tagged('k', String(i)), '1');
          return (await Promise.all(masters(c).map((n) => n.dbsize()))).every((n) => n > 0);
        },
        15_000,
        { message: 'every master takes writes with the fixed CA file', intervalMs: 250 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without TLS the cluster is not usable', async () => {
    const c = client({ url: '', clusterAddresses: cluster.addresses.split(',') });
    expect(await pingRedis(c, 1500)).toBe(false);
  });
});
