// Shared test rig: real redis-server and nats-server per test file, an
// in-test SafetyKernel that decides by topic, and the gateway in-process on
// port 0 (D49: service tests isolate by servers, not key prefixes).
import * as grpc from '@grpc/grpc-js';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { createJobStore, jobKeys, type JobStore } from '@cordum/job-store';
import { createLocks, type Locks } from '@cordum/locks';
import { closeRedis, createRedis, startClockSync, type RedisClient } from '@cordum/redis';
import {
  Decision,
  JobCancelSchema,
  JobRequestSchema,
  SafetyKernel,
  addGrpcService,
  create,
  decideHandler,
  decodePacket,
  encodePacket,
  grpcError,
  GrpcStatus,
  newPacket,
  type BusPacket,
  type JobRequest,
  type PolicyCheckRequest,
} from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { loadGatewayConfig } from '../src/config';
import { createGateway, type Gateway, type GatewayDeps } from '../src/gateway';

export const KEYS = {
  admin: 'admin-key-acme-0001',
  operator: 'operator-key-acme-01',
  viewer: 'viewer-key-acme-0001',
  globex: 'operator-key-globex1',
  star: 'star-key-any-tenant1',
} as const;

export const API_KEYS_JSON = JSON.stringify([
  { key: KEYS.operator, tenant: 'acme', role: 'operator', principal_id: 'alice' },
  { key: KEYS.viewer, tenant: 'acme', role: 'viewer', principal_id: 'victor' },
  { key: KEYS.globex, tenant: 'globex', role: 'operator', principal_id: 'gus' },
  { key: KEYS.star, tenant: '*', role: 'operator', principal_id: 'robot' },
]);

/** Topic-driven verdicts: job.deny.* DENY, job.hold.* REQUIRE_HUMAN, job.throttle.* THROTTLE, job.broken.* gRPC UNAVAILABLE. */
export function kernelDecision(req: PolicyCheckRequest) {
  const seg = req.topic.split('.')[1] ?? '';
  const base = { policySnapshot: 'snap-test', ruleId: `rule-${seg}` };
  switch (seg) {
    case 'deny':
      return { ...base, decision: Decision.DENY, reason: 'destructive operations are not allowed' };
    case 'hold':
      return { ...base, decision: Decision.REQUIRE_HUMAN, reason: 'production changes need a human', approvalRequired: true };
    case 'throttle':
      return { ...base, decision: Decision.THROTTLE, reason: 'too many requests', retryAfterMs: 2500n };
    case 'broken':
      throw grpcError(GrpcStatus.UNAVAILABLE, 'kernel broken');
    default:
      return { ...base, decision: Decision.ALLOW, reason: 'allowed' };
  }
}

export interface FakeKernel {
  address: string;
  calls: PolicyCheckRequest[];
  /** When set, answers (or throws) instead of kernelDecision; return undefined to fall through. */
  override?: (req: PolicyCheckRequest, method: 'check' | 'evaluate' | 'explain' | 'simulate') => ReturnType<typeof kernelDecision> | Promise<ReturnType<typeof kernelDecision>> | undefined;
  stop(): Promise<void>;
}

export async function startFakeKernel(): Promise<FakeKernel> {
  const server = new grpc.Server();
  const calls: PolicyCheckRequest[] = [];
  const decider = (method: 'check' | 'evaluate' | 'explain' | 'simulate') => (req: PolicyCheckRequest) => {
    calls.push(req);
    return fake.override?.(req, method) ?? kernelDecision(req);
  };
  const decide = decideHandler({ check: decider('check'), evaluate: decider('evaluate') });
  addGrpcService(server, SafetyKernel, {
    check: decider('check'),
    evaluate: decider('evaluate'),
    decide,
    explain: decider('explain'),
    simulate: decider('simulate'),
    listSnapshots: () => ({ current: 'snap-test', snapshots: [{ id: 'snap-test', loadedAtMs: 1_700_000_000_000n, ruleCount: 4 }] }),
    listRules: () => ({
      snapshot: 'snap-test',
      defaultDecision: 'allow',
      rules: ['deny', 'hold', 'throttle'].map((seg) => ({ id: `rule-${seg}`, decision: seg === 'hold' ? 'require_approval' : seg, reason: seg, source: 'file', specJson: `{"match":{"topics":["job.${seg}.>"]}}` })),
    }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const fake: FakeKernel = {
    address: `127.0.0.1:${port}`,
    calls,
    // tryShutdown waits for clients to hang up; bound it so a lingering channel cannot hang afterAll.
    stop: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        decide.drain();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
  return fake;
}

export interface Rig {
  redis: TestServer;
  nats: TestServer;
  kernel: FakeKernel;
  gateway: Gateway;
  url: string;
  stop(): Promise<void>;
}

export interface RigOptions {
  /** Runs against the rig's Redis before the gateway starts (state a replica finds at start). */
  beforeGateway?: (redisUrl: string) => Promise<void>;
  /** Passed to createGateway. */
  deps?: Pick<GatewayDeps, 'grpcReceiveTimeoutMs' | 'wrapStore'>;
}

/** The env of a test gateway: loopback ports picked by the OS, the test keys, the given servers. */
export function gatewayTestEnv(servers: { redis: string; nats: string; kernel: string }, instanceId: string): Record<string, string> {
  return {
    REDIS_URL: servers.redis,
    NATS_URL: servers.nats,
    GATEWAY_HTTP_ADDR: '127.0.0.1:0',
    GATEWAY_METRICS_ADDR: '127.0.0.1:0',
    GATEWAY_GRPC_ADDR: '127.0.0.1:0',
    SAFETY_KERNEL_ADDR: servers.kernel,
    CORDUM_API_KEY: KEYS.admin,
    TENANT_ID: 'acme',
    CORDUM_API_KEYS: API_KEYS_JSON,
    CORDUM_INSTANCE_ID: instanceId,
  };
}

export async function startRig(extraEnv: Record<string, string> = {}, opts: RigOptions = {}): Promise<Rig> {
  const redis = await startRedis();
  const nats = await startNats();
  const kernel = await startFakeKernel();
  await opts.beforeGateway?.(redis.url);
  const config = loadGatewayConfig({ ...gatewayTestEnv({ redis: redis.url, nats: nats.url, kernel: kernel.address }, 'gw-test'), ...extraEnv });
  // CORDUM_TEST_VERBOSE=1 shows the gateway's log lines on stderr.
  const verbose = Boolean(process.env['CORDUM_TEST_VERBOSE']);
  const logger = createLogger({ service: 'api-gateway', instance: 'gw-test', level: verbose ? 'debug' : 'error', write: verbose ? (l) => void process.stderr.write(l) : () => undefined });
  const gateway = createGateway(config, { logger, ...opts.deps });
  await gateway.start();
  return {
    redis,
    nats,
    kernel,
    gateway,
    url: `http://127.0.0.1:${gateway.httpPort}`,
    stop: async () => {
      await gateway.stop();
      logger.info('rig: gateway stopped');
      await kernel.stop();
      logger.info('rig: kernel stopped');
      await nats.stop();
      await redis.stop();
    },
  };
}

export interface CallResult {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  ms: number;
}

/** fetch with JSON in and out; `body` as a string is sent raw. */
export async function call(
  base: string,
  method: string,
  path: string,
  opts: { key?: string; tenant?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<CallResult> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.key !== undefined) headers['X-API-Key'] = opts.key;
  if (opts.tenant !== undefined) headers['X-Tenant-ID'] = opts.tenant;
  let body: string | undefined;
  if (opts.body !== undefined) {
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['Content-Type'] = 'application/json';
  }
  const t0 = Date.now();
  const res = await fetch(`${base}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text.length ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, headers: res.headers, body: parsed, ms: Date.now() - t0 };
}

/** Value of a metric line `name{...} value` (or `name value`) from /metrics text; labels matched as a substring. */
export async function metric(url: string, name: string, labels = ''): Promise<number | null> {
  const text = await (await fetch(`${url}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(' ') || rest.startsWith('{'))) continue;
    if (labels !== '' && !rest.includes(labels)) continue;
    return Number(line.split(' ').pop());
  }
  return null;
}

/** A GET of a job that does not exist with `key` on each of `urls`, the statuses in that order: 404 while the key works, 401 once it is refused. */
export function statusEverywhere(urls: readonly string[], key: string): Promise<number[]> {
  return Promise.all(urls.map(async (u) => (await call(u, 'GET', '/api/v1/jobs/x', { key })).status));
}

/**
 * Runs `round` (one request per replica, their statuses) until a round begun at or after `from` is all 401, and returns
 * the answers of the rounds that started at or after `from`. A key refused from `from` on has
 * only 401s there, however slowly the machine ran the rounds (a bound on the wall time it took
 * to see the first 401 failed under load).
 */
export async function answersFrom(round: () => Promise<number[]>, from: number, message: string, timeoutMs = 5_000): Promise<number[]> {
  const late: number[] = [];
  await waitFor(
    async () => {
      const startedAt = Date.now();
      const codes = await round();
      if (startedAt >= from) late.push(...codes);
      // Done once a round sent after `from` is refused everywhere: a round that started before it
      // and reached the gateways after it (a loaded box) is all 401 too, and proves nothing.
      return startedAt >= from && codes.every((c) => c === 401);
    },
    timeoutMs,
    { message },
  );
  return late;
}

export function expectEnvelope(r: CallResult, status: number, code: string): void {
  expect({ status: r.status, code: r.body['code'] }).toEqual({ status, code });
  expect(r.body['status']).toBe(status);
  expect(typeof r.body['error']).toBe('string');
  expect(r.headers.get('content-type') ?? '').toMatch(/application\/json/);
}

/** A test's own clients of a rig's servers, to set up and read state: the store has no hooks, so what the test writes publishes nothing. */
export interface RigClients {
  redis: RedisClient;
  store: JobStore;
  locks: Locks;
  bus: Bus;
  /** Moves a job to FAILED the way the scheduler would (fenced), so it lands in the DLQ. */
  failJob(id: string): Promise<void>;
  close(): Promise<void>;
}

/** Moves a job to FAILED the way the scheduler would (fenced, under the job lock), so it lands in the DLQ. */
export async function failJobAsScheduler(store: JobStore, locks: Locks, id: string): Promise<void> {
  const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  if (!lease) throw new Error('lock');
  const r = await store.transition(id, 'FAILED', { token: lease.token, patch: { error: { code: 'worker_error', message: 'boom' } } });
  await lease.release();
  if (!r.ok) throw new Error(`fail ${id}: ${r.reason}`);
}

/** Moves a PENDING job to RUNNING as a scheduler and its worker would (fenced), on worker w1's direct subject. */
export async function runJobAsScheduler(store: JobStore, locks: Locks, id: string): Promise<void> {
  const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  if (!lease) throw new Error('lock');
  const dispatch = { dispatchId: `d-${id}`, attempt: 1, published: true, subject: 'worker.w1.jobs', workerId: 'w1', startAck: true };
  for (const [to, patch] of [['SCHEDULED', {}], ['DISPATCHED', { dispatch, attempts: 1 }], ['RUNNING', {}]] as const) {
    const r = await store.transition(id, to, { token: lease.token, patch });
    if (!r.ok) throw new Error(`${to} ${id}: ${r.reason}`);
  }
  await lease.release();
}

export async function rigClients(rig: Rig, name: string): Promise<RigClients> {
  const redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  const store = createJobStore(redis, { jobTtlMs: 60_000 });
  const locks = createLocks(redis);
  const bus = await connectBus({ servers: [rig.nats.url], name, logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
  return {
    redis,
    store,
    locks,
    bus,
    failJob: (id) => failJobAsScheduler(store, locks, id),
    async close() {
      await bus.close();
      await closeRedis(redis);
    },
  };
}

export interface SubmitRecorder {
  /** The JobRequest packets seen on sys.job.submit for a job, in arrival order. */
  packets(jobId: string): BusPacket[];
  /** The first JobRequest seen for a job, once it arrives (waits up to 10 s). */
  first(jobId: string): Promise<{ packet: BusPacket; request: JobRequest }>;
  /** Jobs with at least one JobRequest seen. */
  readonly jobs: number;
  /**
   * Publishes a sentinel submit and waits until it is recorded. JetStream delivers in stream
   * order, so every submit a gateway published before this call (its answer follows its publish)
   * has been recorded when it resolves: the barrier before asserting that something was NOT published.
   */
  drained(): Promise<void>;
  stop(): Promise<void>;
}

/** Records every JobRequest on sys.job.submit, counted per job (a second publish is seen, not merged). */
export async function recordSubmits(bus: Bus, queue: string): Promise<SubmitRecorder> {
  const seen = new Map<string, BusPacket[]>();
  let sentinels = 0;
  const consumer = await bus.consume({
    subject: subjects.submit,
    queue,
    decode: decodePacket,
    handler: async (packet) => {
      if (packet.payload.case === 'jobRequest') {
        const id = packet.payload.value.jobId;
        seen.set(id, [...(seen.get(id) ?? []), packet]);
      }
      return { kind: 'ack' };
    },
  });
  const packets = (jobId: string): BusPacket[] => seen.get(jobId) ?? [];
  return {
    packets,
    get jobs() {
      return seen.size;
    },
    async first(jobId) {
      const packet = await waitFor(() => packets(jobId)[0], 10_000, { message: `JobRequest for ${jobId} on sys.job.submit` });
      if (packet.payload.case !== 'jobRequest') throw new Error('not a JobRequest');
      return { packet, request: packet.payload.value };
    },
    async drained() {
      const id = `sentinel-${queue}-${++sentinels}`;
      await bus.publish(subjects.submit, encodePacket(newPacket('test', { case: 'jobRequest', value: create(JobRequestSchema, { jobId: id, topic: 'job.sentinel' }) })));
      await waitFor(() => seen.has(id), 10_000, { message: 'sentinel submit recorded' });
      seen.delete(id);
    },
    stop: () => consumer.stop(),
  };
}

let cancelSentinels = 0;
/**
 * Publishes a sentinel JobCancel and waits until `seen` (filled by a subscription on
 * sys.job.cancel) holds it. The server delivers to a subscription in the order it took the
 * publishes, so every JobCancel a gateway published before answering has arrived too: the
 * barrier before asserting how many there were.
 */
export async function cancelsDrained(bus: Bus, seen: readonly { jobId: string }[]): Promise<void> {
  const jobId = `sentinel-cancel-${++cancelSentinels}`;
  await bus.publish(subjects.cancel, encodePacket(newPacket('test', { case: 'jobCancel', value: create(JobCancelSchema, { jobId }) })));
  await waitFor(() => seen.some((c) => c.jobId === jobId), 10_000, { message: 'sentinel JobCancel received' });
}

/**
 * Runs `fn` with this process's clusterNow() offset what a host `behindMs` behind Redis measures
 * (P241), then measures again on the true clock, so what runs next is on time.
 */
export async function onHostBehindRedis<T>(redis: RedisClient, behindMs: number, fn: () => T | Promise<T>): Promise<T> {
  const skewed = startClockSync(redis, { hostNow: () => Date.now() - behindMs });
  await skewed.ready;
  skewed.stop();
  try {
    return await fn();
  } finally {
    const onTime = startClockSync(redis);
    await onTime.ready;
    onTime.stop();
  }
}
