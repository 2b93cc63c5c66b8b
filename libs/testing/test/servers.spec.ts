import { connect } from 'node:net';
import { ServerExitedError, startNats, startRedis, waitFor, type TestServer } from '../src';

function redisPing(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' }, () => s.write('PING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString());
    });
    s.once('error', reject);
  });
}

describe('test servers', () => {
  let redis: TestServer;
  let nats: TestServer;
  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
  });
  afterAll(async () => {
    await Promise.all([redis?.stop(), nats?.stop()]);
  });

  it('starts a redis-server that answers PING on its own port', async () => {
    expect(redis.port).not.toBe(6379);
    expect(await redisPing(redis.port)).toBe('+PONG\r\n');
  });

  it('starts a nats-server with JetStream enabled', async () => {
    expect(nats.port).not.toBe(4222);
    await waitFor(() => nats.process.hasLine(/Starting JetStream/));
  });

  it('a server that exits at start fails its start with its log (not at the timeout), which the cluster retry relies on', async () => {
    const failed = await startRedis({ args: ['--no-such-directive', 'x'] }).then(() => null, (e: unknown) => e);
    expect(failed).toBeInstanceOf(ServerExitedError);
    expect((failed as Error).message).toMatch(/redis-server on \d+ exited: .*no-such-directive/is);
  });

  it('waitFor fails with a readable message', async () => {
    await expect(waitFor(() => false, 50, { message: 'never' })).rejects.toThrow(/timed out after 50 ms \(never\)/);
  });
});
