// Readiness is one answer on every surface: /readyz, the metrics port's /readyz and
// grpc.health.v1 run the same checks (a Redis PING, NATS, JetStream, the first config load), so a
// gRPC load balancer does not route to a replica that HTTP's probe keeps out.
import { STREAM_SYS } from '@cordum/bus';
import { Health, ServingStatus, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { closeRedis, createRedis } from '@cordum/redis';
import { connect } from 'nats';
import { waitFor } from '@cordum/testing';
import { call, startRig, type Rig } from './harness';

let rig: Rig;
let health: GrpcClient<(typeof Health)['method']>;

beforeAll(async () => {
  rig = await startRig(
    { CORDUM_CONFIG_RELOAD_INTERVAL: '200ms' },
    {
      // A config document no replica can read: the watcher's first load fails.
      beforeGateway: async (url) => {
        const redis = createRedis({ url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'readiness-spec' });
        await redis.set('cfg:system:default', '{not json');
        await closeRedis(redis);
      },
    },
  );
  health = grpcClientFor(Health, `127.0.0.1:${rig.gateway.grpcPort}`, { defaultDeadlineMs: 5_000 });
});

afterAll(async () => {
  health.close();
  await rig.stop();
});

const metricsReady = async (): Promise<number> => (await fetch(`http://127.0.0.1:${rig.gateway.metricsPort}/readyz`)).status;

it('before the first config load succeeds, /readyz is 503 on both ports and gRPC health is NOT_SERVING; all three turn ready together once the document is readable', async () => {
  const ready = await call(rig.url, 'GET', '/readyz');
  expect(ready.status).toBe(503);
  expect(ready.body['checks']).toMatchObject({ redis: true, nats: true, config: false });
  expect(await metricsReady()).toBe(503);
  expect((await health.check({ service: '' })).status).toBe(ServingStatus.NOT_SERVING);
  expect((await health.check({ service: 'cordum.v1.CordumApi' })).status).toBe(ServingStatus.NOT_SERVING);

  const redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'readiness-spec' });
  try {
    await redis.del('cfg:system:default');
  } finally {
    await closeRedis(redis);
  }
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 10_000, { message: '/readyz 200 after the document was fixed' });
  expect(await metricsReady()).toBe(200);
  expect((await health.check({ service: '' })).status).toBe(ServingStatus.SERVING);
  expect((await health.check({ service: 'cordum.v1.CordumApi' })).status).toBe(ServingStatus.SERVING);
});

it('a frozen Redis (SIGSTOP) makes gRPC health NOT_SERVING as it makes /readyz 503, and both recover after SIGCONT', async () => {
  const grpcStatus = async (): Promise<ServingStatus> => (await health.check({ service: 'cordum.v1.CordumApi' })).status;
  expect(await grpcStatus()).toBe(ServingStatus.SERVING);
  await rig.redis.process.freeze();
  try {
    // the client connection stays open, so only a PING can tell
    await waitFor(async () => (await grpcStatus()) === ServingStatus.NOT_SERVING, 5_000, { message: 'gRPC health NOT_SERVING with Redis frozen' });
    expect((await call(rig.url, 'GET', '/readyz')).status).toBe(503);
  } finally {
    rig.redis.process.kill('SIGCONT');
  }
  await waitFor(async () => (await grpcStatus()) === ServingStatus.SERVING, 10_000, { message: 'gRPC health SERVING after SIGCONT' });
  expect((await call(rig.url, 'GET', '/readyz')).status).toBe(200);
});

it('a frozen NATS (SIGSTOP) makes /readyz 503 with jetstream false while the connection still counts as up, and gRPC health NOT_SERVING; both recover after SIGCONT (P263)', async () => {
  const grpcStatus = async (): Promise<ServingStatus> => (await health.check({ service: 'cordum.v1.CordumApi' })).status;
  const before = await call(rig.url, 'GET', '/readyz');
  expect(before.status).toBe(200);
  expect(before.body['checks']).toMatchObject({ nats: true, jetstream: true });
  await rig.nats.process.freeze();
  try {
    // The client's pings (every 5 s, two unanswered) notice a frozen server after 10 s or more:
    // until then `nats` is true, and only the stream request tells (within its 1.5 s timeout, plus
    // the half second a shared answer stands, P268).
    const ready = await waitFor(async () => {
      const r = await call(rig.url, 'GET', '/readyz');
      return r.status === 503 ? r : undefined;
    }, 4_000, { message: '/readyz 503 with NATS frozen' });
    expect(ready.body['checks']).toMatchObject({ redis: true, nats: true, jetstream: false });
    expect(await grpcStatus()).toBe(ServingStatus.NOT_SERVING);
  } finally {
    rig.nats.process.kill('SIGCONT');
  }
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 20_000, { message: '/readyz 200 after SIGCONT' });
  expect(await grpcStatus()).toBe(ServingStatus.SERVING);
});

it('gRPC health Watches (no key needed) and /readyz share the dependency checks: about one JetStream request and one Redis PING per half second, however many ask (P268)', async () => {
  await waitFor(async () => (await call(rig.url, 'GET', '/readyz')).status === 200, 20_000, { message: 'ready' });
  const redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'readiness-spec-pings' });
  const nc = await connect({ servers: rig.nats.url, name: 'readiness-spec-stream-info' });
  let streamInfos = 0;
  const sub = nc.subscribe(`$JS.API.STREAM.INFO.${STREAM_SYS}`, { callback: () => void (streamInfos += 1) });
  await nc.flush();
  const pings = async (): Promise<number> => Number(/cmdstat_ping:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
  // Each Watch polls the checks every second; the loop below asks /readyz as fast as it answers.
  const watches = Array.from({ length: 50 }, () => {
    const w = health.watch({ service: '' });
    w.on('data', () => undefined);
    w.on('error', () => undefined);
    return w;
  });
  try {
    const pingsBefore = await pings();
    const infosBefore = streamInfos;
    const started = performance.now();
    let probes = 0;
    while (performance.now() - started < 3_000) {
      expect((await call(rig.url, 'GET', '/readyz')).status).toBe(200);
      probes += 1;
    }
    const windows = Math.ceil((performance.now() - started) / 500) + 1;
    await nc.flush();
    const asked = { probes: probes > 20, streamInfos: streamInfos - infosBefore, pings: (await pings()) - pingsBefore };
    // Before P268: one of each per probe and per Watch poll (hundreds). The PINGs also hold the
    // count query itself and the test client's connection check.
    expect(asked).toEqual({ probes: true, streamInfos: expect.any(Number) as unknown, pings: expect.any(Number) as unknown });
    expect(asked.streamInfos).toBeLessThanOrEqual(windows);
    expect(asked.pings).toBeLessThanOrEqual(windows + 2);
  } finally {
    for (const w of watches) w.cancel();
    sub.unsubscribe();
    await nc.close();
    await closeRedis(redis);
  }
});
