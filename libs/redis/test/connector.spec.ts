// A connection's socket keeps an `error` listener for its whole life (GuardedConnector). ioredis
// listens with `once`, so a second error on one socket (seen in CI under load: a TLS cluster
// node's "alert decode error" while connections were failing and being dialled again) had no
// listener left and became an uncaught exception, which stops a service.
import { REDIS_BACKENDS, startRedisBackend, waitFor, type RedisBackend } from '@cordum/testing';
import { closeRedis, createRedis, masters, pingRedis, type RedisClient } from '../src';

describe.each(REDIS_BACKENDS)('a socket that errors twice (%s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  const reported: Error[] = [];

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1, events: { error: (err) => void reported.push(err), restored: () => undefined } });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('does not throw on the second error, and the client connects again', async () => {
    expect(await pingRedis(redis, 5_000)).toBe(true);
    const stream = masters(redis)[0]!.stream;
    // What a socket does when it fails twice; without the lasting listener the second emit throws
    // (EventEmitter: an 'error' with no listener), which in a service is an uncaught exception.
    expect(() => {
      stream.emit('error', new Error('first socket error'));
      stream.emit('error', new Error('second socket error'));
    }).not.toThrow();
    stream.destroy();
    // dialled again: the same client (standalone) or a new one for the node (a cluster's pool)
    await waitFor(async () => masters(redis).length > 0 && masters(redis).every((n) => n.status === 'ready' && n.stream !== stream) && (await pingRedis(redis, 1_000)), 15_000, { message: 'connected again' });
  });
});
