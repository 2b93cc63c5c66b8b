// Process lifecycle of every service bundle: a bad env var stops it at start
// with one line naming the variable; SIGTERM stops it within 15 s with exit 0
// and every Redis and NATS connection it opened is closed.
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { freePort, spawnService, startNats, startRedis, waitFor, type ManagedProcess, type TestServer } from '@cordum/testing';
import { readyz } from './stack';

function redisConnectedClients(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' }, () => s.write('INFO clients\r\n'));
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      const m = /connected_clients:(\d+)/.exec(buf);
      if (m) {
        s.destroy();
        resolve(Number(m[1]) - 1); // minus this probe connection
      }
    });
    s.once('error', reject);
  });
}

async function natsConnections(monitorPort: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/connz`);
  return ((await res.json()) as { num_connections: number }).num_connections;
}

const badEnv: [string, Record<string, string>, string][] = [
  ['safety-kernel', { SAFETY_KERNEL_GRPC_ADDR: 'not an address' }, 'SAFETY_KERNEL_GRPC_ADDR'],
  ['scheduler', { REDIS_POOL_SIZE: 'abc' }, 'REDIS_POOL_SIZE'],
  ['api-gateway', { CORDUM_API_KEYS: 'not-json' }, 'CORDUM_API_KEYS'],
  ['echo-worker', { WORKER_MAX_PARALLEL: 'many' }, 'WORKER_MAX_PARALLEL'],
  ['scheduler', { NATS_URL: 'ftp://nowhere' }, 'NATS_URL'],
];

describe('service lifecycle', () => {
  let redis: TestServer;
  let nats: TestServer;
  let monitorPort: number;
  beforeAll(async () => {
    monitorPort = await freePort();
    [redis, nats] = await Promise.all([startRedis(), startNats({ args: ['-m', String(monitorPort)] })]);
  });
  afterAll(async () => {
    await Promise.all([redis?.stop(), nats?.stop()]);
  });

  it.each(badEnv)('%s refuses a bad env var with one line naming it', async (service, env, name) => {
    const p = spawnService(service, { REDIS_URL: redis.url, NATS_URL: nats.url, CORDUM_API_KEY: 'k-123456789', ...env }, { cwd: tmpdir() });
    const exit = await p.waitExit(15_000);
    expect(exit.code).toBe(2);
    expect(p.errOutput).toHaveLength(1);
    expect(p.errOutput[0]).toContain(name);
    expect(p.errOutput[0]).not.toMatch(/\n|at .*\.js:\d+/);
  });

  it('every service stops on SIGTERM within 15 s and closes its connections', async () => {
    const baseRedis = await redisConnectedClients(redis.port);
    const baseNats = await natsConnections(monitorPort);
    const common = { REDIS_URL: redis.url, NATS_URL: nats.url };
    const kernelGrpc = `127.0.0.1:${await freePort()}`;
    const ports = { kernel: await freePort(), scheduler: await freePort(), gateway: await freePort(), worker: await freePort() };
    const procs: [string, ManagedProcess, number][] = [
      ['safety-kernel', spawnService('safety-kernel', { ...common, SAFETY_KERNEL_GRPC_ADDR: kernelGrpc, SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${ports.kernel}` }, { cwd: tmpdir() }), ports.kernel],
      ['scheduler', spawnService('scheduler', { ...common, SAFETY_KERNEL_ADDR: kernelGrpc, SCHEDULER_HTTP_ADDR: `127.0.0.1:${ports.scheduler}` }, { cwd: tmpdir() }), ports.scheduler],
      ['api-gateway', spawnService('api-gateway', {
        ...common,
        SAFETY_KERNEL_ADDR: kernelGrpc,
        CORDUM_API_KEY: 'k-123456789',
        GATEWAY_HTTP_ADDR: `127.0.0.1:${ports.gateway}`,
        GATEWAY_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
        GATEWAY_METRICS_ADDR: `127.0.0.1:${await freePort()}`,
      }, { cwd: tmpdir() }), ports.gateway],
      ['echo-worker', spawnService('echo-worker', { ...common, WORKER_HTTP_ADDR: `127.0.0.1:${ports.worker}` }, { cwd: tmpdir() }), ports.worker],
    ];
    try {
      for (const [name, p, port] of procs) {
        await waitFor(async () => {
          if (!p.running) throw new Error(`${name} exited: ${p.logs()}`);
          return readyz(port);
        }, 60_000, { message: `${name} ready` });
      }
      expect(await redisConnectedClients(redis.port)).toBeGreaterThan(baseRedis);
      expect(await natsConnections(monitorPort)).toBeGreaterThan(baseNats);

      for (const [name, p] of procs) {
        const t0 = Date.now();
        p.kill('SIGTERM');
        const exit = await p.waitExit(15_000);
        expect({ name, code: exit.code, withinMs: Date.now() - t0 < 15_000 }).toEqual({ name, code: 0, withinMs: true });
      }
      await waitFor(async () => (await redisConnectedClients(redis.port)) === baseRedis, 5_000, { message: 'redis clients back to baseline' });
      await waitFor(async () => (await natsConnections(monitorPort)) === baseNats, 5_000, { message: 'nats connections back to baseline' });
    } finally {
      await Promise.all(procs.map(([, p]) => p.stop()));
    }
  });
});
