import { createServer as createNetServer, type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  Decision,
  GrpcStatus,
  Health,
  SafetyKernel,
  ServingStatus,
  addGrpcService,
  addHealthService,
  decideHandler,
  grpcClientFor,
  grpcError,
  grpcServerOptions,
  grpcServiceDefinition,
  parseGrpcAddress,
  shutdownGrpcServer,
  bindGrpcServer,
  routeGrpcLogs,
} from '../src';
import type { GrpcClient, HealthCheckResponse, PolicyCheckRequest } from '../src';

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

interface Kernel {
  server: grpc.Server;
  port: number;
  name: string;
  status: ServingStatus;
}

const releaseSlow = deferred();

async function startKernel(name: string): Promise<Kernel> {
  const server = new grpc.Server(grpcServerOptions());
  const k: Kernel = { server, port: 0, name, status: ServingStatus.SERVING };
  const check = (req: PolicyCheckRequest) => ({
    decision: req.topic === 'job.denied' ? Decision.DENY : Decision.ALLOW,
    reason: `${name}:${req.jobId}:${req.labels['team'] ?? ''}`,
    ruleId: req.tenant,
    policySnapshot: 'snap-1',
  });
  const evaluate = (req: PolicyCheckRequest): never => {
    if (req.jobId === 'plain') throw new Error('boom');
    throw grpcError(GrpcStatus.INVALID_ARGUMENT, `bad job ${req.jobId}`);
  };
  addGrpcService(server, SafetyKernel, {
    check,
    evaluate,
    decide: decideHandler({ check, evaluate }),
    explain: async () => {
      await releaseSlow.promise;
      return { reason: 'late' };
    },
    simulate: async (req, call) => {
      await Promise.resolve();
      return { reason: call.metadata.get('x-tenant')[0]?.toString() ?? req.jobId };
    },
    listSnapshots: () => ({ snapshots: [{ id: 'snap-1' }] }),
    listRules: () => ({ snapshot: 'snap-1' }),
  });
  addHealthService(server, (service) => (service === '' || service === 'cordum.v1.SafetyKernel' ? k.status : undefined), {
    watchIntervalMs: 20,
  });
  k.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  return k;
}

describe('gRPC glue', () => {
  let a: Kernel;
  let b: Kernel;
  const clients: Array<{ close(): void }> = [];
  const track = <T extends { close(): void }>(c: T): T => {
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    a = await startKernel('a');
    b = await startKernel('b');
  });

  afterAll(() => {
    releaseSlow.resolve();
    for (const c of clients) c.close();
    a.server.forceShutdown();
    b.server.forceShutdown();
  });

  it('builds definitions with /<package>.<Service>/<Method> paths', () => {
    const def = grpcServiceDefinition(SafetyKernel);
    expect(Object.keys(def).sort()).toEqual(['check', 'decide', 'evaluate', 'explain', 'listRules', 'listSnapshots', 'simulate']);
    expect(def['check']?.path).toBe('/cordum.v1.SafetyKernel/Check');
    expect(def['listSnapshots']?.path).toBe('/cordum.v1.SafetyKernel/ListSnapshots');
    expect(grpcServiceDefinition(Health)['watch']).toMatchObject({ path: '/grpc.health.v1.Health/Watch', responseStream: true });
  });

  it('parses D23 addresses', () => {
    expect(parseGrpcAddress('kernel:50051')).toEqual(['kernel:50051']);
    expect(parseGrpcAddress('dns:///kernel:50051')).toEqual(['dns:///kernel:50051']);
    expect(parseGrpcAddress('127.0.0.1:1, 127.0.0.2:2')).toEqual(['ipv4:127.0.0.1:1,127.0.0.2:2']);
    expect(parseGrpcAddress('[::1]:1,[::1]:2')).toEqual(['ipv6:[::1]:1,[::1]:2']);
    expect(parseGrpcAddress('k1:1,k2:2')).toEqual(['k1:1', 'k2:2']);
    expect(() => parseGrpcAddress('')).toThrow(expect.objectContaining({ code: 'invalid_address' }));
    expect(() => parseGrpcAddress('k1:1,nope')).toThrow(expect.objectContaining({ code: 'invalid_address' }));
    expect(() => parseGrpcAddress('k1:1,dns:///k2:2')).toThrow(expect.objectContaining({ code: 'invalid_address' }));
  });

  it('refuses single addresses grpc-js would misread (a URL, no port, port out of range)', () => {
    expect(parseGrpcAddress('[::1]:50051')).toEqual(['[::1]:50051']);
    expect(parseGrpcAddress('dns://8.8.8.8/kernel:50051')).toEqual(['dns://8.8.8.8/kernel:50051']);
    expect(parseGrpcAddress('unix:/run/kernel.sock')).toEqual(['unix:/run/kernel.sock']);
    expect(() => parseGrpcAddress('http://kernel:50051')).toThrow('use host:port or dns:///host:port, not a URL: "http://kernel:50051"');
    expect(() => parseGrpcAddress('kernel')).toThrow('bad host:port "kernel" (port 1-65535)');
    expect(() => parseGrpcAddress('dns:///kernel')).toThrow('bad host:port "kernel" in "dns:///kernel"');
    for (const bad of ['kernel:0', 'kernel:99999', 'k1:1,k2:70000']) expect(() => parseGrpcAddress(bad)).toThrow(expect.objectContaining({ code: 'invalid_address' }));
  });

  it('round-trips a unary call with typed request and response', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `127.0.0.1:${a.port}`));
    const res = await kernel.check({ jobId: 'j1', topic: 'job.echo', tenant: 't1', labels: { team: 'x' } }, { deadlineMs: 5_000 });
    expect(res.decision).toBe(Decision.ALLOW);
    expect(res.reason).toBe('a:j1:x');
    expect(res.ruleId).toBe('t1');
    expect((await kernel.check({ jobId: 'j2', topic: 'job.denied' })).decision).toBe(Decision.DENY);
    expect((await kernel.listSnapshots({})).snapshots.map((s) => s.id)).toEqual(['snap-1']);
    expect((await kernel.simulate({ jobId: 'j3' }, { metadata: { 'x-tenant': 'meta-t' } })).reason).toBe('meta-t');
  });

  it('accepts dns:/// targets', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `dns:///127.0.0.1:${b.port}`));
    expect((await kernel.check({ jobId: 'd' }, { deadlineMs: 5_000 })).reason).toBe('b:d:');
  });

  it.each([
    ['an IP comma list (grpc-js round_robin)', '127.0.0.1', 1],
    ['a host-name comma list (client round robin)', 'localhost', 2],
  ])('spreads calls over %s', async (_name, host, channels) => {
    const kernel = track(grpcClientFor(SafetyKernel, `${host}:${a.port},${host}:${b.port}`));
    expect(kernel.targets).toHaveLength(channels);
    await kernel.waitForReady(5_000);
    const seen = new Set<string>();
    // round_robin connects to every backend in the background; both must
    // answer within a bounded number of calls.
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      const res = await kernel.check({ jobId: `rr-${i}` }, { deadlineMs: 5_000, waitForReady: true });
      seen.add(res.reason.split(':')[0] ?? '');
    }
    expect([...seen].sort()).toEqual(['a', 'b']);
  });

  it('fails with DEADLINE_EXCEEDED when the deadline expires', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `127.0.0.1:${a.port}`));
    const started = Date.now();
    await expect(kernel.explain({ jobId: 'slow' }, { deadlineMs: 150 })).rejects.toMatchObject({ code: GrpcStatus.DEADLINE_EXCEEDED });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
  });

  it('applies defaultDeadlineMs when a call passes none', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `127.0.0.1:${a.port}`, { defaultDeadlineMs: 100 }));
    await expect(kernel.explain({ jobId: 'slow' })).rejects.toMatchObject({ code: GrpcStatus.DEADLINE_EXCEEDED });
  });

  it('maps handler errors to gRPC statuses', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `127.0.0.1:${a.port}`));
    await expect(kernel.evaluate({ jobId: 'x' })).rejects.toMatchObject({ code: GrpcStatus.INVALID_ARGUMENT, details: 'bad job x' });
    await expect(kernel.evaluate({ jobId: 'plain' })).rejects.toMatchObject({ code: GrpcStatus.INTERNAL, details: 'boom' });
  });

  it('fails fast with UNAVAILABLE when nothing listens', async () => {
    const kernel = track(grpcClientFor(SafetyKernel, `127.0.0.1:1`));
    await expect(kernel.check({ jobId: 'x' }, { deadlineMs: 5_000 })).rejects.toMatchObject({ code: GrpcStatus.UNAVAILABLE });
  });

  describe('health', () => {
    it('answers Check for known services and NOT_FOUND for unknown ones', async () => {
      const h = track(grpcClientFor(Health, `127.0.0.1:${a.port}`));
      expect((await h.check({ service: '' }, { deadlineMs: 5_000 })).status).toBe(ServingStatus.SERVING);
      expect((await h.check({ service: 'cordum.v1.SafetyKernel' })).status).toBe(ServingStatus.SERVING);
      await expect(h.check({ service: 'nope' })).rejects.toMatchObject({ code: GrpcStatus.NOT_FOUND });
      a.status = ServingStatus.NOT_SERVING;
      try {
        expect((await h.check({ service: '' })).status).toBe(ServingStatus.NOT_SERVING);
      } finally {
        a.status = ServingStatus.SERVING;
      }
    });

    it('streams the current status and its changes on Watch', async () => {
      const h = track(grpcClientFor(Health, `127.0.0.1:${b.port}`));
      const stream = h.watch({ service: '' });
      const got: ServingStatus[] = [];
      const sawChange = new Promise<void>((resolve, reject) => {
        stream.on('data', (msg: HealthCheckResponse) => {
          got.push(msg.status);
          if (got.length === 1) b.status = ServingStatus.NOT_SERVING;
          if (got.length === 2) resolve();
        });
        stream.on('error', (err: grpc.ServiceError) => {
          if (err.code !== GrpcStatus.CANCELLED) reject(err);
        });
      });
      await sawChange;
      stream.cancel();
      b.status = ServingStatus.SERVING;
      expect(got).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    });
  });
});

describe('connection recycling (dns:/// targets find kernels added later)', () => {
  it('a client connection is replaced after the max age, and calls keep succeeding across it', async () => {
    expect(grpcServerOptions()).toMatchObject({ 'grpc.max_connection_age_ms': 300_000, 'grpc.max_connection_age_grace_ms': 60_000 });
    const server = new grpc.Server(grpcServerOptions({ 'grpc.max_connection_age_ms': 400, 'grpc.max_connection_age_grace_ms': 200 }));
    addGrpcService(server, SafetyKernel, {
      check: () => ({}),
      evaluate: () => ({}),
      decide: decideHandler({ check: () => ({}), evaluate: () => ({}) }),
      explain: () => ({}),
      simulate: (_req, call) => ({ reason: call.getPeer() }),
      listSnapshots: () => ({}),
      listRules: () => ({}),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const client = grpcClientFor(SafetyKernel, `127.0.0.1:${port}`, { defaultDeadlineMs: 2_000 });
    try {
      const peers = new Set<string>();
      const until = Date.now() + 1_500;
      while (Date.now() < until) {
        peers.add((await client.simulate({ jobId: 'x' })).reason);
        await new Promise((r) => setTimeout(r, 50));
      }
      // each connection comes from its own client port
      expect(peers.size).toBeGreaterThanOrEqual(2);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
});

describe('addGrpcService statuses: always sent, and small enough to send', () => {
  let server: grpc.Server;
  let raw: grpc.Client;
  let health: GrpcClient<(typeof Health)['method']>;
  const long = 'é'.repeat(100_000);

  beforeAll(async () => {
    server = new grpc.Server();
    // Health's two method kinds, handled badly on purpose: Check rejects with a huge message, Watch rejects.
    addGrpcService(server, Health, {
      check: (req) => {
        throw grpcError(GrpcStatus.FAILED_PRECONDITION, req.service === 'huge' ? long : 'nope');
      },
      watch: async () => {
        await Promise.resolve();
        throw grpcError(GrpcStatus.FAILED_PRECONDITION, `watch failed ${long}`);
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    health = grpcClientFor(Health, `127.0.0.1:${port}`, { defaultDeadlineMs: 3_000 });
  });

  afterAll(() => {
    raw.close();
    health.close();
    server.forceShutdown();
  });

  const watchStatus = (bytes: Buffer): Promise<grpc.StatusObject> =>
    new Promise((resolve) => {
      const s = raw.makeServerStreamRequest('/grpc.health.v1.Health/Watch', (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), { deadline: Date.now() + 3_000 });
      s.on('data', () => undefined);
      s.on('error', () => undefined);
      s.on('status', resolve);
    });

  it('a message of 100,000 two-byte characters is cut to 4 KiB percent-encoded and sent (unsent over ~64 KiB: the client waited for its deadline)', async () => {
    const err = await health.check({ service: 'huge' }).then(
      () => null,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).toBe(GrpcStatus.FAILED_PRECONDITION);
    expect(err?.details).toMatch(/^é+…$/);
    expect(encodeURI(err?.details ?? '').length).toBeLessThanOrEqual(4096);
  });

  it('a server-streaming handler that rejects ends the call with its status (call.destroy sent none)', async () => {
    const status = await watchStatus(Buffer.alloc(0));
    expect(status.code).toBe(GrpcStatus.FAILED_PRECONDITION);
    expect(status.details).toMatch(/^watch failed é+…$/);
  });

  it('without `undecodable`, a request that does not decode keeps grpc-js\'s INTERNAL; addHealthService asks for INVALID_ARGUMENT', async () => {
    const check = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest('/grpc.health.v1.Health/Check', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0x7f]), new grpc.Metadata(), { deadline: Date.now() + 3_000 }, (e) => resolve(e)),
    );
    expect(check?.code).toBe(GrpcStatus.INTERNAL);
    expect((await watchStatus(Buffer.from([0x0a, 0x7f]))).code).toBe(GrpcStatus.INTERNAL);
  });
});

describe('addHealthService', () => {
  it('answers a request that does not decode INVALID_ARGUMENT (Check and Watch), and cuts an unknown service name it echoes', async () => {
    const server = new grpc.Server();
    addHealthService(server, (service) => (service === '' ? ServingStatus.SERVING : undefined));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const opts = { deadline: Date.now() + 3_000 };
      const check = (bytes: Buffer): Promise<grpc.ServiceError | null> =>
        new Promise((resolve) => raw.makeUnaryRequest('/grpc.health.v1.Health/Check', (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), opts, (e) => resolve(e)));
      const bad = await check(Buffer.from([0x0a, 0x7f]));
      expect(bad?.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      expect(bad?.details).toMatch(/^request is not a valid grpc\.health\.v1\.HealthCheckRequest message: /);
      const watch = await new Promise<grpc.StatusObject>((resolve) => {
        const s = raw.makeServerStreamRequest('/grpc.health.v1.Health/Watch', (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0x7f]), new grpc.Metadata(), opts);
        s.on('data', () => undefined);
        s.on('error', () => undefined);
        s.on('status', resolve);
      });
      expect(watch.code).toBe(GrpcStatus.INVALID_ARGUMENT);
      // field 1 (service): 80,000 x, echoed cut to 128
      const name = Buffer.from('x'.repeat(80_000));
      const unknown = await check(Buffer.concat([Buffer.from([0x0a, 0x80, 0xf1, 0x04]), name]));
      expect(unknown?.code).toBe(GrpcStatus.NOT_FOUND);
      expect(unknown?.details).toBe(`unknown service "${'x'.repeat(128)}…"`);
    } finally {
      raw.close();
      server.forceShutdown();
    }
  });
});

// P232: a stopping server ends its health Watches (NOT_SERVING, then OK) instead of letting an
// open Watch hold tryShutdown until the force (the gateway took 5 s to stop with one open).
describe('health Watches of a stopping server', () => {
  it('endWatches sends NOT_SERVING and ends each open Watch with OK, so tryShutdown completes at once; a later Watch ends at once too', async () => {
    const server = new grpc.Server();
    const health = addHealthService(server, () => ServingStatus.SERVING, { watchIntervalMs: 20 });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const h = grpcClientFor(Health, `127.0.0.1:${port}`);
    try {
      const watchUntilEnd = (): { got: ServingStatus[]; first: Promise<void>; ended: Promise<number> } => {
        const got: ServingStatus[] = [];
        const stream = h.watch({ service: '' });
        const first = new Promise<void>((resolve) => stream.on('data', (m: HealthCheckResponse) => { got.push(m.status); resolve(); }));
        const ended = new Promise<number>((resolve) => stream.on('status', (s: grpc.StatusObject) => resolve(s.code)));
        stream.on('error', () => undefined);
        return { got, first, ended };
      };
      const open = watchUntilEnd();
      await open.first;
      health.endWatches();
      expect(await open.ended).toBe(GrpcStatus.OK);
      expect(open.got).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
      const later = watchUntilEnd();
      expect(await later.ended).toBe(GrpcStatus.OK);
      expect(later.got).toEqual([ServingStatus.NOT_SERVING]);
      // Nothing left open: a graceful shutdown completes (an open Watch held it until cancelled).
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    } finally {
      h.close();
      server.forceShutdown();
    }
  });
});

// The gateway's and the kernel's gRPC stops share shutdownGrpcServer: streams named in
// endStreams end first, so the drain completes; a stream nobody ends is cut at drainMs.
describe('shutdownGrpcServer', () => {
  const startWatched = async (): Promise<{ server: grpc.Server; health: ReturnType<typeof addHealthService>; ended: Promise<number>; close: () => void }> => {
    const server = new grpc.Server();
    const health = addHealthService(server, () => ServingStatus.SERVING, { watchIntervalMs: 20 });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const h = grpcClientFor(Health, `127.0.0.1:${port}`);
    const stream = h.watch({ service: '' });
    const first = new Promise<void>((resolve) => stream.on('data', () => resolve()));
    const ended = new Promise<number>((resolve) => stream.on('status', (s: grpc.StatusObject) => resolve(s.code)));
    stream.on('error', () => undefined);
    await first;
    return { server, health, ended, close: () => h.close() };
  };

  it('ends the named streams first, so an open Watch ends OK and the stop does not wait for the drain bound', async () => {
    const w = await startWatched();
    try {
      const t0 = Date.now();
      const stopped = shutdownGrpcServer(w.server, { endStreams: () => w.health.endWatches(), drainMs: 60_000 });
      expect(await w.ended).toBe(GrpcStatus.OK);
      await stopped;
      expect(Date.now() - t0).toBeLessThan(10_000); // the drain bound is 60 s: it was not waited for
    } finally {
      w.close();
      w.server.forceShutdown();
    }
  });

  it('cuts a stream nobody ended once drainMs has passed, and resolves', async () => {
    const w = await startWatched();
    try {
      const t0 = Date.now();
      await shutdownGrpcServer(w.server, { drainMs: 300 });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      expect(await w.ended).not.toBe(GrpcStatus.OK);
    } finally {
      w.close();
      w.server.forceShutdown();
    }
  });
});

// P240: an empty host (a `:port` address) binds `[::]`, one dual-stack socket: IPv6 and IPv4
// clients both reach it. `0.0.0.0` stays IPv4 only.
describe('bindGrpcServer listen address', () => {
  const serves = async (target: string): Promise<boolean> => {
    const h = grpcClientFor(Health, target);
    try {
      return (await h.check({ service: '' }, { deadlineMs: 2_000 })).status === ServingStatus.SERVING;
    } catch {
      return false;
    } finally {
      h.close();
    }
  };

  it('an empty host takes IPv6 and IPv4 clients; 0.0.0.0 only IPv4', async () => {
    const any = new grpc.Server();
    const v4 = new grpc.Server();
    addHealthService(any, () => ServingStatus.SERVING);
    addHealthService(v4, () => ServingStatus.SERVING);
    try {
      const anyPort = await bindGrpcServer(any, { host: '', port: 0 });
      const v4Port = await bindGrpcServer(v4, { host: '0.0.0.0', port: 0 });
      expect({ v4: await serves(`127.0.0.1:${anyPort}`), v6: await serves(`[::1]:${anyPort}`) }).toEqual({ v4: true, v6: true });
      expect({ v4: await serves(`127.0.0.1:${v4Port}`), v6: await serves(`[::1]:${v4Port}`) }).toEqual({ v4: true, v6: false });
    } finally {
      any.forceShutdown();
      v4.forceShutdown();
    }
  });
});

// P291: a gRPC port in use is one error, the bind's, naming it; grpc-js's own stderr lines go to
// the service's log at debug, and `[::]` failing for it is not retried on `0.0.0.0`.
describe('bindGrpcServer on a port in use', () => {
  it('rejects once with "address already in use", and grpc-js writes nothing to the console', async () => {
    const blocker = createNetServer();
    await new Promise<void>((resolve) => blocker.listen(0, '::', resolve));
    const port = (blocker.address() as AddressInfo).port;
    const debug: string[] = [];
    routeGrpcLogs({ debug: (msg, fields) => void debug.push(`${msg} ${String(fields?.['detail'])}`) });
    const consoleError = jest.spyOn(console, 'error');
    const server = new grpc.Server();
    try {
      await expect(bindGrpcServer(server, { host: '', port })).rejects.toThrow(`gRPC cannot listen on [::]:${port}: address already in use`);
      expect(consoleError).not.toHaveBeenCalled();
      expect(debug.filter((l) => l.includes('No address added'))).toHaveLength(1);
    } finally {
      consoleError.mockRestore();
      server.forceShutdown();
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
