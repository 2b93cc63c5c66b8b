// The rate limiter's group commit (issue 7): requests for one bucket that arrive while a script
// call for it is in flight go to Redis as one call with their count, and D24's bound still holds
// because every token is taken in that one atomic step. In process, on a real redis-server.
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { createRedis, closeRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { callsOf, commandCalls, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { createRateLimiter, rateLimitKey, type LimitDecision, type RateLimiter, type RateLimits } from '../src/ratelimit/limiter';
import { peerAddress } from '../src/ratelimit/middleware';
import { addressBucket, createFailedLoginBudget, FAILED_LOGIN_BURST } from '../src/auth/failed-logins';

const quiet = createLogger({ service: 'test', instance: 't', level: 'error', write: () => undefined });

/** Script calls Redis has run (EVALSHA, and EVAL when the script was not loaded yet). */
const scriptCalls = async (admin: RedisClient): Promise<number> => callsOf(await commandCalls(admin), 'evalsha', 'eval');

describe('rate limiter group commit', () => {
  let server: TestServer;
  let admin: RedisClient;
  const clients: RedisClient[] = [];

  /** A limiter on its own connection (a replica's), once that connection is ready: before, it decides in memory. */
  const limiter = async (limits: RateLimits, name: string): Promise<RateLimiter> => {
    const redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 2, minIdleConns: 1, name });
    clients.push(redis);
    await waitFor(() => redis.status === 'ready', 5_000, { message: `${name} connected` });
    return createRateLimiter({ redis, useRedis: true, limits, registry: new Registry(), logger: quiet });
  };

  beforeAll(async () => {
    server = await startRedis();
    admin = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  });

  afterAll(async () => {
    for (const c of clients) await closeRedis(c);
    await closeRedis(admin);
    await server.stop();
  });

  it('200 requests at once take 2 script calls and exactly the burst is granted', async () => {
    const l = await limiter({ rps: 0.001, burst: 50 }, 'gw-a');
    const before = await scriptCalls(admin);
    const decisions = await Promise.all(Array.from({ length: 200 }, () => l.check('tenant:a')));
    // The first request went alone; the 199 that came while it was in flight went as one call.
    expect((await scriptCalls(admin)) - before).toBeLessThanOrEqual(3); // + one EVAL if the script was not cached
    expect(decisions.filter((d) => d.allowed)).toHaveLength(50);
    // First come, first served: the granted ones are the first 50.
    expect(decisions.slice(0, 50).every((d) => d.allowed)).toBe(true);
    for (const d of decisions.slice(50)) {
      expect(d.allowed).toBe(false);
      if (!d.allowed) expect(d.retryAfterMs).toBeGreaterThanOrEqual(1);
    }
    expect(l.mode).toBe('redis');
    // Nothing waits any more: the bucket's lane is gone and the next request goes on its own.
    const lone = await scriptCalls(admin);
    await l.check('tenant:a');
    expect((await scriptCalls(admin)) - lone).toBe(1);
  });

  it('a request alone is sent at once: one call per sequential request', async () => {
    const l = await limiter({ rps: 1000, burst: 1000 }, 'gw-b');
    await l.check('tenant:b');
    const before = await scriptCalls(admin);
    for (let i = 0; i < 5; i++) expect((await l.check('tenant:b')).allowed).toBe(true);
    expect((await scriptCalls(admin)) - before).toBe(5);
  });

  it('two replicas hammering one bucket stay within BURST + RPS × T (D24)', async () => {
    const limits = { rps: 40, burst: 20 };
    const replicas = [await limiter(limits, 'gw-c1'), await limiter(limits, 'gw-c2')];
    const t0 = Date.now();
    const deadline = t0 + 1_000;
    let accepted = 0;
    let calls = 0;
    const before = await scriptCalls(admin);
    // 16 requests in flight per replica, each issuing the next as soon as it is decided.
    await Promise.all(
      replicas.flatMap((l) =>
        Array.from({ length: 16 }, async () => {
          while (Date.now() < deadline) {
            const d: LimitDecision = await l.check('tenant:c');
            calls += 1;
            if (d.allowed) accepted += 1;
          }
        }),
      ),
    );
    const seconds = (Date.now() - t0) / 1000;
    expect(accepted).toBeGreaterThanOrEqual(limits.burst);
    expect(accepted).toBeLessThanOrEqual(Math.floor(limits.burst + limits.rps * seconds));
    // Batching happened: far fewer script calls than decisions.
    expect((await scriptCalls(admin)) - before).toBeLessThan(calls / 2);
  });

  it('a batch that throws outside its Redis call still answers everyone, and the bucket keeps working', async () => {
    // A client that has not dialled yet (lazy) sends the limiter to memory, and this logger throws on
    // the switch's log line: the exception leaves runBatch outside its try.
    const redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 2, minIdleConns: 0, name: 'gw-e' });
    clients.push(redis);
    const lines: string[] = [];
    const logger = createLogger({
      service: 'test',
      instance: 't',
      level: 'warn',
      write: (line) => {
        lines.push(line);
        if (line.includes('falling back')) throw new Error('log sink broken');
      },
    });
    const l = createRateLimiter({ redis, useRedis: true, limits: { rps: 1000, burst: 1000 }, registry: new Registry(), logger });
    const decisions = await Promise.all(Array.from({ length: 5 }, () => l.check('tenant:e')));
    expect(decisions.every((d) => d.allowed)).toBe(true);
    expect(lines.some((x) => x.includes('rate limiter batch failed'))).toBe(true);
    // No lane was left behind: the next request of the bucket is answered too.
    expect((await l.check('tenant:e')).allowed).toBe(true);
  });

  it('requests queued behind a call that timed out are decided in memory, not sent to the frozen Redis', async () => {
    const l = await limiter({ rps: 1000, burst: 1000 }, 'gw-d');
    await l.check('tenant:d');
    const before = await scriptCalls(admin);
    await server.process.freeze();
    let decisions: LimitDecision[];
    try {
      const first = l.check('tenant:d');
      const queued = Array.from({ length: 10 }, () => l.check('tenant:d'));
      decisions = await Promise.all([first, ...queued]);
      expect(l.mode).toBe('memory');
    } finally {
      server.process.kill('SIGCONT');
    }
    expect(decisions.every((d) => d.allowed)).toBe(true); // the in-memory bucket has the same burst
    // Redis runs what reached its socket once it wakes: only the first request's call did.
    await waitFor(async () => (await scriptCalls(admin)) - before >= 1, 5_000);
    expect((await scriptCalls(admin)) - before).toBe(1);
    // And the limiter goes back to Redis on the next request.
    expect((await l.check('tenant:d')).allowed).toBe(true);
    expect(l.mode).toBe('redis');
    expect(await admin.exists(rateLimitKey('tenant:d'))).toBe(1);
  });
});

describe('peerAddress', () => {
  it('drops the port and the grpc-js scheme', () => {
    expect(peerAddress('ipv4:10.1.2.3:51234')).toBe('10.1.2.3');
    expect(peerAddress('ipv6:[::1]:51234')).toBe('::1');
    expect(peerAddress('10.1.2.3:51234')).toBe('10.1.2.3');
    expect(peerAddress('[2001:db8::1]:443')).toBe('2001:db8::1');
    // P280: a grpc-js server's own form, the IPv6 address unbracketed
    expect(peerAddress('::ffff:10.1.2.3:51234')).toBe('::ffff:10.1.2.3');
    expect(peerAddress('2001:db8::1:443')).toBe('2001:db8::1');
    expect(peerAddress('::1')).toBe('::1');
  });

  describe('on a real grpc-js server listening dual-stack, as GATEWAY_GRPC_ADDR=:8080 does (P280)', () => {
    let server: grpc.Server;
    let port = 0;
    const peers: string[] = [];
    const service = {
      echo: {
        path: '/test.Peer/Echo',
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    } satisfies grpc.ServiceDefinition;
    const callFrom = async (target: string): Promise<void> => {
      const Client = grpc.makeGenericClientConstructor(service, 'Peer');
      const c = new Client(target, grpc.credentials.createInsecure()) as unknown as grpc.Client & { echo(b: Buffer, cb: (err: Error | null) => void): void };
      try {
        await new Promise<void>((resolve, reject) => c.echo(Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));
      } finally {
        c.close();
      }
    };

    beforeAll(async () => {
      server = new grpc.Server();
      server.addService(service, {
        echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
          peers.push(call.getPeer());
          cb(null, Buffer.alloc(0));
        },
      });
      port = await new Promise<number>((resolve, reject) => server.bindAsync('[::]:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    });
    afterAll(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

    it('an IPv4 and an IPv6 client are each one address, whichever connection they come on, and the IPv4 one is its own failed-login bucket', async () => {
      await callFrom(`127.0.0.1:${port}`);
      await callFrom(`127.0.0.1:${port}`);
      await callFrom(`[::1]:${port}`);
      expect(peers).toHaveLength(3);
      expect(peers.map(peerAddress)).toEqual(['::ffff:127.0.0.1', '::ffff:127.0.0.1', '::1']);
      expect(addressBucket(peerAddress(peers[0] ?? ''))).toBe('127.0.0.1');
    });
  });
});

describe('failed-login budget (P55)', () => {
  it('allows 20 checks at a time per client, then one more every 3 s, gives back the token of a check that passed, and forgets a client once refilled', () => {
    let t = 5_000_000;
    const b = createFailedLoginBudget({ now: () => t });
    for (let i = 0; i < FAILED_LOGIN_BURST; i++) expect(b.take('10.0.0.1')).toBe(0);
    expect(b.take('10.0.0.1')).toBe(3_000);
    expect(b.take('10.0.0.2')).toBe(0);
    b.refund('10.0.0.2'); // full again: forgotten
    t += 1_000;
    expect(b.take('10.0.0.1')).toBe(2_000);
    t += 2_000;
    expect(b.take('10.0.0.1')).toBe(0);
    expect(b.take('10.0.0.1')).toBe(3_000);
    b.refund('10.0.0.1');
    expect(b.take('10.0.0.1')).toBe(0);
    expect(b.take('10.0.0.1')).toBe(3_000);
    t += 60_000;
    for (let i = 0; i < FAILED_LOGIN_BURST; i++) expect(b.take('10.0.0.1')).toBe(0);
    expect(b.take('10.0.0.1')).toBeGreaterThan(0);
  });
});

describe('rate limiter fallback probe (P181)', () => {
  let server: TestServer;
  let admin: RedisClient;
  let redis: RedisClient;

  beforeAll(async () => {
    server = await startRedis();
    admin = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'gw-probe' });
    await waitFor(() => redis.status === 'ready', 5_000, { message: 'limiter connected' });
  });

  afterAll(async () => {
    await closeRedis(redis);
    await closeRedis(admin);
    await server.stop();
  });

  /** Commands Redis refused for memory (`errorstat_OOM`). */
  const oomRefusals = async (): Promise<number> => Number(/errorstat_OOM:count=(\d+)/.exec(await admin.info('errorstats'))?.[1] ?? 0);

  it('probes with the limiter script, so a Redis that answers PING but refuses writes (OOM) keeps the fallback; once it takes writes, a scrape switches back', async () => {
    const registry = new Registry();
    const limiter = createRateLimiter({ redis, useRedis: true, limits: { rps: 100, burst: 100 }, registry, logger: quiet });
    const gauge = async (name: string): Promise<number> => (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? -1;
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      expect((await limiter.check('acme')).allowed).toBe(true); // decided in memory: the script was refused
      expect(limiter.mode).toBe('memory');
      expect(await oomRefusals()).toBe(1);
      await registry.metrics(); // a scrape: its probe is the script, refused too
      await waitFor(async () => (await oomRefusals()) === 2, 5_000, { message: 'the probe ran the script and was refused' });
      await registry.metrics();
      expect(limiter.mode).toBe('memory');
      expect(await gauge('cordum_rate_limit_in_memory')).toBe(1);
      expect(await gauge('cordum_rate_limit_fallback_total')).toBe(1);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    // Scrape as Prometheus does, until one switches back: a probe that the previous scrape
    // started may still be on its way back refused (the scrape does not wait on it), and while
    // it is, a scrape starts none.
    await waitFor(
      async () => {
        await registry.metrics();
        return limiter.mode === 'redis';
      },
      5_000,
      { message: 'a scrape switched back' },
    );
    expect(await gauge('cordum_rate_limit_in_memory')).toBe(0);
  });
});
