// REDIS_URL_FILE (a mounted Kubernetes Secret) is read again at every connect for its user and
// password (decisions.md P128): a password rotated on Redis and in the file is what the next
// connection logs in with, with no restart. A file that cannot be used keeps the last good
// credentials. The cluster case is in cluster-auth.spec.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { replaceFileWhole, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { closeRedis, createRedis, pingRedis, redisLogEvents, RedisUrlFileError, type RedisClient } from '../src';

describe('REDIS_URL_FILE on a standalone Redis whose password is rotated (P128)', () => {
  let server: TestServer;
  let admin: RedisClient;
  const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-url-'));
  const urlFile = join(dir, 'REDIS_URL');
  const open: RedisClient[] = [];
  const urlWith = (pw: string): string => `redis://:${pw}@127.0.0.1:${server.port}/0\n`;

  beforeAll(async () => {
    server = await startRedis({ password: 'first-pw' });
    admin = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    await waitFor(() => pingRedis(admin), 5_000, { message: 'admin connected' });
  });
  afterAll(async () => {
    await Promise.all([admin, ...open].map((c) => closeRedis(c)));
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Drops `c`'s connection on the server's side and waits until the client is back, on a new connection. */
  const reconnected = async (c: RedisClient): Promise<void> => {
    const before = (await c.client('ID')) as number;
    await admin.client('KILL', 'ID', String(before));
    await waitFor(async () => (await pingRedis(c, 500)) && ((await c.client('ID')) as number) !== before, 10_000, { message: 'the client back on a new connection' });
  };

  it('the password changes on Redis and in the file: the next connection logs in with the new one; unusable files keep the last good one', async () => {
    replaceFileWhole(urlFile, urlWith('first-pw'));
    const seen: Error[] = [];
    const logged: string[] = [];
    const log = redisLogEvents({ warn: (m) => void logged.push(m), info: () => undefined });
    const c = createRedis({ url: urlWith('first-pw').trim(), urlFile, clusterAddresses: [], poolSize: 4, minIdleConns: 1, events: { error: (err, n) => (seen.push(err), log.error(err, n)), restored: () => undefined } });
    open.push(c);
    expect(await pingRedis(c, 3000)).toBe(true);

    // Open connections stay logged in; new ones need the new password.
    await admin.config('SET', 'requirepass', 'second-pw');
    replaceFileWhole(urlFile, urlWith('second-pw'));
    await reconnected(c);
    await c.set('url-file:k', 'v');
    expect(await c.get('url-file:k')).toBe('v');
    expect(seen.filter((e) => e.message.startsWith('WRONGPASS'))).toEqual([]);

    // Text that is not a URL, then no file at all: the last good password still logs in.
    replaceFileWhole(urlFile, 'second-pw\n');
    await reconnected(c);
    expect(seen.find((e) => e instanceof RedisUrlFileError)?.message).toBe(`REDIS_URL_FILE unusable, the last good user and password are used: ${urlFile} does not hold a URL`);
    expect(logged).toContain('redis REDIS_URL_FILE unusable at a connect; the last good user and password are used');
    rmSync(urlFile);
    await reconnected(c);
    expect(seen.filter((e) => e instanceof RedisUrlFileError).map((e) => e.message).join('\n')).toMatch(/ENOENT/);
    // No message carries a password.
    expect(seen.map((e) => e.message).join('\n')).not.toMatch(/second-pw|first-pw/);
  });

  it('a file that now points at another database: its password is used, the connection stays on the database of the start, and that is reported', async () => {
    const seen: Error[] = [];
    const logged: string[] = [];
    const log = redisLogEvents({ warn: (m) => void logged.push(m), info: () => undefined });
    replaceFileWhole(urlFile, urlWith('second-pw'));
    const c = createRedis({ url: urlWith('second-pw').trim(), urlFile, clusterAddresses: [], poolSize: 1, minIdleConns: 1, events: { error: (err, n) => (seen.push(err), log.error(err, n)), restored: () => undefined } });
    open.push(c);
    expect(await pingRedis(c, 3000)).toBe(true);
    replaceFileWhole(urlFile, urlWith('second-pw').replace('/0\n', '/5\n'));
    await reconnected(c);
    expect((c as Redis).options.db).toBe(0);
    expect(seen.map((e) => [e.constructor.name, e.message])).toEqual([
      ['RedisUrlFileMovedError', `REDIS_URL_FILE now points at redis://127.0.0.1:${server.port}/5, not redis://127.0.0.1:${server.port}/0 as at start: only its user and password are used; restart to connect there`],
    ]);
    expect(logged).toEqual(['redis REDIS_URL_FILE points elsewhere than at start; only its user and password are used until a restart']);
    expect(seen.map((e) => e.message).join('\n')).not.toMatch(/second-pw/);
  });

  it('without REDIS_URL_FILE the password of REDIS_URL stays what the client was created with', async () => {
    const c = createRedis({ url: urlWith('second-pw').trim(), clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    open.push(c);
    expect(await pingRedis(c, 3000)).toBe(true);
    expect((c as Redis).options.password).toBe('second-pw');
  });
});
