// Check and Evaluate over the Decide stream (P17) against real grpc-js servers
// on loopback: answers matched by id, errors and deadlines per request, the
// unary fallback for a kernel without Decide, a kernel that drains or dies.
import * as grpc from '@grpc/grpc-js';
import {
  Decision,
  GrpcStatus,
  PolicyCheckResponseSchema,
  create,
  SafetyKernel,
  ServingStatus,
  addGrpcService,
  addHealthService,
  createPolicyClient,
  decideHandler,
  grpcError,
  grpcServiceDefinition,
  SUSPECT_PROBE_MS,
  type DecideHandler,
  type PolicyCheckRequest,
  type PolicyClient,
} from '../src';

interface Latch {
  promise: Promise<void>;
  open: () => void;
}
function latch(): Latch {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface TestKernel {
  name: string;
  server: grpc.Server;
  port: number;
  /** Every request each method saw, in order. */
  seen: { method: 'check' | 'evaluate' | 'unary-check' | 'unary-evaluate'; jobId: string }[];
  decide?: DecideHandler;
  /** Requests for these job ids wait for the latch. */
  hold: Map<string, Latch>;
  /** What grpc.health.v1 answers for the SafetyKernel service, and how often it was asked. */
  health: ServingStatus;
  probes: number;
}

async function startKernel(name: string, withDecide = true, port = 0): Promise<TestKernel> {
  const server = new grpc.Server();
  const k: TestKernel = { name, server, port: 0, seen: [], hold: new Map(), health: ServingStatus.SERVING, probes: 0 };
  addHealthService(server, () => {
    k.probes++;
    return k.health;
  });
  const answer = (method: TestKernel['seen'][number]['method']) => async (req: PolicyCheckRequest) => {
    k.seen.push({ method, jobId: req.jobId });
    await k.hold.get(req.jobId)?.promise;
    if (req.topic === 'job.invalid') throw grpcError(GrpcStatus.INVALID_ARGUMENT, `bad ${req.jobId}`);
    if (req.topic === 'job.boom') throw new Error('boom');
    if (req.topic === 'job.slow') await new Promise((r) => setTimeout(r, Number(req.labels['delay'] ?? 0)));
    return {
      decision: req.topic === 'job.denied' ? Decision.DENY : Decision.ALLOW,
      reason: `${name}:${method}:${req.jobId}`,
      ruleId: req.tenant,
      policySnapshot: 'snap-1',
    };
  };
  if (withDecide) {
    k.decide = decideHandler({ check: answer('check'), evaluate: answer('evaluate') });
    addGrpcService(server, SafetyKernel, {
      check: answer('unary-check'),
      evaluate: answer('unary-evaluate'),
      explain: () => ({}),
      simulate: () => ({}),
      listSnapshots: () => ({}),
      listRules: () => ({}),
      decide: k.decide,
    });
  } else {
    // A kernel from before Decide: the same service without the method.
    const def = grpcServiceDefinition(SafetyKernel);
    const unary =
      (fn: (req: PolicyCheckRequest) => Promise<unknown>) =>
      (call: grpc.ServerUnaryCall<PolicyCheckRequest, unknown>, cb: grpc.sendUnaryData<unknown>) =>
        void fn(call.request).then((res) => cb(null, create(PolicyCheckResponseSchema, res as Parameters<typeof create<typeof PolicyCheckResponseSchema>>[1])), (err: unknown) => cb(err as grpc.ServiceError));
    server.addService(
      { check: def['check'] as grpc.MethodDefinition<unknown, unknown>, evaluate: def['evaluate'] as grpc.MethodDefinition<unknown, unknown> },
      { check: unary(answer('unary-check')), evaluate: unary(answer('unary-evaluate')) },
    );
  }
  k.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return k;
}

const shutdown = (k: TestKernel): Promise<void> => new Promise((resolve) => k.server.tryShutdown(() => resolve()));

describe('policy stream (Decide)', () => {
  const kernels: TestKernel[] = [];
  const clients: PolicyClient[] = [];
  const kernel = async (name: string, withDecide = true, port = 0): Promise<TestKernel> => {
    const k = await startKernel(name, withDecide, port);
    kernels.push(k);
    return k;
  };
  const client = (address: string, opts: Parameters<typeof createPolicyClient>[1] = {}): PolicyClient => {
    const c = createPolicyClient(address, opts);
    clients.push(c);
    return c;
  };

  afterAll(() => {
    for (const c of clients) c.close();
    for (const k of kernels) {
      for (const l of k.hold.values()) l.open();
      k.server.forceShutdown();
    }
  });

  it('answers many concurrent calls, each with its own answer, as stream messages', async () => {
    const k = await kernel('a');
    const c = client(`127.0.0.1:${k.port}`);
    // Random delays so answers come back out of order.
    const jobs = Array.from({ length: 200 }, (_, i) => ({ jobId: `j${i}`, topic: i % 7 === 0 ? 'job.denied' : 'job.slow', tenant: `t${i}`, labels: { delay: String(i % 5) } }));
    const answers = await Promise.all(jobs.map((j, i) => (i % 2 ? c.check(j, 5_000) : c.evaluate(j, 5_000))));
    answers.forEach((res, i) => {
      expect(res.reason).toBe(`a:${i % 2 ? 'check' : 'evaluate'}:j${i}`);
      expect(res.ruleId).toBe(`t${i}`);
      expect(res.decision).toBe(i % 7 === 0 ? Decision.DENY : Decision.ALLOW);
    });
    expect(c.transport).toBe('stream');
    // No unary call was made: everything went over Decide.
    expect(k.seen.filter((s) => s.method.startsWith('unary'))).toEqual([]);
    expect(k.seen).toHaveLength(200);
    expect(k.decide?.open).toBeGreaterThanOrEqual(1);
  });

  it('fails one request with its gRPC status and keeps the stream for the next', async () => {
    const k = await kernel('b');
    const c = client(`127.0.0.1:${k.port}`, { streams: 1 });
    await expect(c.check({ jobId: 'x1', topic: 'job.invalid' }, 5_000)).rejects.toMatchObject({ code: GrpcStatus.INVALID_ARGUMENT, details: 'bad x1' });
    await expect(c.evaluate({ jobId: 'x2', topic: 'job.boom' }, 5_000)).rejects.toMatchObject({ code: GrpcStatus.INTERNAL, details: 'boom' });
    expect((await c.check({ jobId: 'x3', topic: 'job.ok' }, 5_000)).reason).toBe('b:check:x3');
    expect(k.decide?.open).toBe(1);
  });

  it('fails a request at its deadline without failing the others', async () => {
    const k = await kernel('c');
    const c = client(`127.0.0.1:${k.port}`, { streams: 1 });
    const stuck = latch();
    k.hold.set('stuck', stuck);
    const slow = c.check({ jobId: 'stuck', topic: 'job.ok' }, 150);
    const fine = c.check({ jobId: 'fine', topic: 'job.ok' }, 5_000);
    await expect(slow).rejects.toMatchObject({ code: GrpcStatus.DEADLINE_EXCEEDED });
    expect((await fine).reason).toBe('c:check:fine');
    // The stream that carried the late request is retired; the next call opens another one.
    expect((await c.check({ jobId: 'after', topic: 'job.ok' }, 5_000)).reason).toBe('c:check:after');
    stuck.open();
  });

  it('falls back to unary calls for a kernel without Decide', async () => {
    const k = await kernel('old', false);
    const c = client(`127.0.0.1:${k.port}`);
    const first = await Promise.all([c.check({ jobId: 'o1', topic: 'job.ok' }, 5_000), c.evaluate({ jobId: 'o2', topic: 'job.ok' }, 5_000)]);
    expect(first.map((r) => r.reason)).toEqual(['old:unary-check:o1', 'old:unary-evaluate:o2']);
    expect(c.transport).toBe('unary');
    await expect(c.check({ jobId: 'o3', topic: 'job.invalid' }, 5_000)).rejects.toMatchObject({ code: GrpcStatus.INVALID_ARGUMENT });
    expect(k.seen.map((s) => s.method)).toEqual(['unary-check', 'unary-evaluate', 'unary-check']);
  });

  it('takes the kernels of a comma list in turn, also across retired streams', async () => {
    const a = await kernel('ra');
    const b = await kernel('rb');
    const c = client(`127.0.0.1:${a.port},127.0.0.1:${b.port}`, { streams: 1, streamMaxAgeMs: 0 });
    const names = new Set<string>();
    for (let i = 0; i < 20 && names.size < 2; i++) names.add((await c.check({ jobId: `r${i}`, topic: 'job.ok' }, 5_000)).reason.split(':')[0] ?? '');
    expect([...names].sort()).toEqual(['ra', 'rb']);
  });

  // A comma list gets one channel per kernel and takes them in turn: the 1st request goes to
  // the first kernel, the 2nd to the second, the 3rd to the first again.
  it('a draining kernel answers what it accepted; what it did not accept is sent again elsewhere', async () => {
    const a = await kernel('da');
    const b = await kernel('db');
    const c = client(`127.0.0.1:${a.port},127.0.0.1:${b.port}`);
    const held = latch();
    a.hold.set('held', held);
    const heldAnswer = c.check({ jobId: 'held', topic: 'job.ok' }, 5_000); // → da
    await until(() => a.seen.some((s) => s.jobId === 'held'), 'the held request to arrive');
    expect((await c.check({ jobId: 'filler', topic: 'job.ok' }, 5_000)).reason).toBe('db:check:filler'); // → db
    a.decide?.drain();
    const closed = shutdown(a);
    // → da's open stream after the drain: never evaluated there.
    const late = c.check({ jobId: 'late', topic: 'job.ok' }, 5_000);
    await new Promise((r) => setImmediate(r));
    held.open();
    expect((await heldAnswer).reason).toBe('da:check:held');
    expect((await late).reason).toBe('db:check:late');
    expect(a.seen.map((s) => s.jobId)).not.toContain('late');
    await closed; // tryShutdown completes: the drained stream ended
  });

  it('sends the requests of a kernel that dies under them to another kernel, and leaves it', async () => {
    const a = await kernel('ka');
    const b = await kernel('kb');
    const c = client(`127.0.0.1:${a.port},127.0.0.1:${b.port}`);
    a.hold.set('doomed', latch());
    const doomed = c.check({ jobId: 'doomed', topic: 'job.ok' }, 30_000); // → ka
    await until(() => a.seen.some((s) => s.jobId === 'doomed'), 'the doomed request to arrive');
    a.server.forceShutdown();
    expect((await doomed).reason).toBe('kb:check:doomed');
    for (let i = 0; i < 6; i++) expect((await c.check({ jobId: `next${i}`, topic: 'job.ok' }, 5_000)).reason).toBe(`kb:check:next${i}`);
  });

  it('waiting for ready (the scheduler): a kernel that refuses connections before its first stream costs no deadline; another kernel answers', async () => {
    const gone = await kernel('gone');
    const b = await kernel('up');
    await shutdown(gone); // its port now refuses connections; the client has never connected to it
    const c = client(`127.0.0.1:${gone.port},127.0.0.1:${b.port}`, { waitForReady: true });
    // The first request goes to the first kernel of the list; it must not wait there for its 5 s deadline.
    expect((await c.check({ jobId: 'first', topic: 'job.ok' }, 5_000)).reason).toBe('up:check:first');
    expect(c.suspects).toEqual([`127.0.0.1:${gone.port}`]);
    for (let i = 0; i < 4; i++) expect((await c.evaluate({ jobId: `then${i}`, topic: 'job.ok' }, 5_000)).reason).toBe(`up:evaluate:then${i}`);
  });

  it('waiting for ready, with every kernel refusing: a request waits for one to come back, up to its deadline', async () => {
    const a = await kernel('a0');
    const b = await kernel('b0');
    await Promise.all([shutdown(a), shutdown(b)]);
    // The scheduler's reconnect backoff (apps/scheduler/src/safety.ts), so a returning kernel is found within ~1 s.
    const c = client(`127.0.0.1:${a.port},127.0.0.1:${b.port}`, {
      waitForReady: true,
      channelOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 1_000 },
    });
    const waiting = c.check({ jobId: 'patient', topic: 'job.ok' }, 10_000);
    await until(() => c.suspects.length > 0, 'a connection to fail');
    await Promise.all([kernel('a1', true, a.port), kernel('b1', true, b.port)]);
    expect((await waiting).reason).toMatch(/^(a1|b1):check:patient$/);
  });

  it('waiting for ready, with its one kernel refusing: requests past their deadlines leave no stream queued to send them when it comes back (P289)', async () => {
    const k = await kernel('lone0');
    await shutdown(k);
    const c = client(`127.0.0.1:${k.port}`, {
      waitForReady: true,
      channelOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 1_000 },
    });
    for (let i = 0; i < 20; i++) await expect(c.check({ jobId: `stale${i}`, topic: 'job.ok' }, 50)).rejects.toMatchObject({ code: GrpcStatus.DEADLINE_EXCEEDED });
    const back = await kernel('lone1', true, k.port);
    expect((await c.check({ jobId: 'fresh', topic: 'job.ok' }, 10_000)).reason).toBe('lone1:check:fresh');
    // Before P289 each expired request's stream stayed queued, half-closed, and started with the
    // channel: the returning kernel evaluated all twenty, ahead of the fresh one.
    expect(back.seen.map((x) => x.jobId)).toEqual(['fresh']);
  });

  it('with one kernel, the requests on a failed stream fail with its status', async () => {
    const a = await kernel('solo');
    const c = client(`127.0.0.1:${a.port}`);
    a.hold.set('doomed', latch());
    const doomed = c.check({ jobId: 'doomed', topic: 'job.ok' }, 30_000);
    await until(() => a.seen.length === 1, 'the request to arrive');
    const started = Date.now();
    a.server.forceShutdown();
    const err = (await doomed.then(
      () => undefined,
      (e: unknown) => e,
    )) as { code?: number } | undefined;
    expect([GrpcStatus.UNAVAILABLE, GrpcStatus.CANCELLED, GrpcStatus.INTERNAL]).toContain(err?.code);
    // Failed by the stream's end, not by the 30 s deadline.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('leaves a kernel that missed a deadline until its health probe answers SERVING', async () => {
    const a = await kernel('sa');
    const b = await kernel('sb');
    const c = client(`127.0.0.1:${a.port},127.0.0.1:${b.port}`);
    a.hold.set('stalled', latch());
    a.health = ServingStatus.NOT_SERVING;
    await expect(c.check({ jobId: 'stalled', topic: 'job.ok' }, 200)).rejects.toMatchObject({ code: GrpcStatus.DEADLINE_EXCEEDED }); // → sa
    expect(c.suspects).toEqual([`127.0.0.1:${a.port}`]);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => c.evaluate({ jobId: `e${i}`, topic: 'job.ok' }, 5_000)));
    expect(new Set(answers.map((r) => r.reason.split(':')[0]))).toEqual(new Set(['sb']));
    // The probe keeps it out while it says NOT_SERVING, and lets it back once it says SERVING.
    await until(() => a.probes >= 1, 'a health probe', SUSPECT_PROBE_MS * 3);
    await new Promise((r) => setImmediate(r));
    expect(c.suspects).toEqual([`127.0.0.1:${a.port}`]);
    a.health = ServingStatus.SERVING;
    await until(() => c.suspects.length === 0, 'the suspect kernel to be probed back', SUSPECT_PROBE_MS * 3);
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) names.add((await c.check({ jobId: `back${i}`, topic: 'job.ok' }, 5_000)).reason.split(':')[0] ?? '');
    expect([...names].sort()).toEqual(['sa', 'sb']);
  });

  it('close() fails waiting calls with CANCELLED and refuses new ones', async () => {
    const k = await kernel('z');
    const c = client(`127.0.0.1:${k.port}`);
    k.hold.set('w', latch());
    const waiting = c.check({ jobId: 'w', topic: 'job.ok' }, 30_000);
    await until(() => k.seen.length === 1, 'the request to arrive');
    c.close();
    await expect(waiting).rejects.toMatchObject({ code: GrpcStatus.CANCELLED });
    await expect(c.evaluate({ jobId: 'n' }, 1_000)).rejects.toMatchObject({ code: GrpcStatus.CANCELLED });
  });
});
