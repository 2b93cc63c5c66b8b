// P151: a connection that has commands out and gets no byte back for the socket timeout (5 s by
// default) is closed and dialled again. A Redis host gone without a reset, or a partition, left
// the client's socket open; keepAlive probes only idle sockets, so every command timed out until
// the kernel gave up retransmitting (~15 min). Here a loopback proxy stops forwarding on the
// connections it has (they stay open and keep acknowledging) while new ones pass: the client must
// get answers again without a restart.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { startRedis, waitFor, type TestServer } from '@cordum/testing';
import { closeRedis, createRedis, isRedisUnavailable, pingRedis, type RedisClient } from '../src';

interface Pair {
  client: Socket;
  upstream: Socket;
  silent: boolean;
}

/** A TCP proxy to `port` whose existing connections can be made silent (bytes read and dropped both ways). */
async function startProxy(port: number): Promise<{ port: number; silenceAll(): void; close(): Promise<void> }> {
  const pairs = new Set<Pair>();
  const server: Server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    const pair: Pair = { client, upstream, silent: false };
    pairs.add(pair);
    client.on('data', (d) => void (pair.silent || upstream.write(d)));
    upstream.on('data', (d) => void (pair.silent || client.write(d)));
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    silenceAll: () => {
      for (const p of pairs) p.silent = true;
    },
    close: async () => {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let server: TestServer;
let proxy: Awaited<ReturnType<typeof startProxy>>;
let redis: RedisClient;

beforeAll(async () => {
  server = await startRedis();
  proxy = await startProxy(server.port);
  redis = createRedis({ url: `redis://127.0.0.1:${proxy.port}`, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  await waitFor(() => pingRedis(redis, 1_000), 10_000, { message: 'ready through the proxy' });
});

afterAll(async () => {
  await closeRedis(redis);
  await proxy.close();
  await server.stop();
});

it('a connection that went silent with commands out is replaced, and commands succeed again without a restart', async () => {
  await redis.set('half-open:k', 'v');
  proxy.silenceAll();
  const lost = await redis.get('half-open:k').then(() => null, (err: unknown) => err);
  expect(isRedisUnavailable(lost)).toBe(true);
  // The socket timeout (5 s) closes the silent connection; the reconnect goes through a new one.
  await waitFor(async () => (await redis.get('half-open:k').catch(() => null)) === 'v', 20_000, { message: 'answers again through a new connection', intervalMs: 500 });
});
