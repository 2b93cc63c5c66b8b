import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActorType, Decision, GrpcStatus, Health, SafetyKernel, ServingStatus, createPolicyClient, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger, createMetricsRegistry } from '@cordum/service-kit';
import type { Registry } from 'prom-client';
import { freePort, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { loadSafetyKernelConfig, withInitialPolicy } from '../src/config';
import { safetyKeys } from '../src/keys';
import { createSafetyKernel, type SafetyKernelService } from '../src/kernel';

const POLICY = `
version: 1
default_decision: deny
rules:
  - id: deny-destructive
    match: { topics: ["job.>"], risk_tags: [destructive] }
    decision: deny
    reason: destructive operations are not allowed
  - id: human-for-prod
    match: { tenants: [acme], labels: { env: prod } }
    decision: require_human
    reason: production changes need a human
  - id: throttle-llm
    match: { topics: ["job.llm.>"] }
    decision: throttle
    velocity: { max_requests: 2, window_seconds: 60, key: tenant }
  - id: bounded-batch
    match: { topics: ["job.batch.>"], actor_types: [service] }
    decision: allow_with_constraints
    constraints: { max_runtime_ms: 60000, max_retries: 2, max_artifact_bytes: 1024, max_concurrent_jobs: 3 }
  - id: allow-jobs
    match: { topics: ["job.>"] }
    decision: allow
`;

type SafetyKernelMethods = typeof SafetyKernel extends { method: infer M } ? M : never;
type HealthMethods = typeof Health extends { method: infer M } ? M : never;

let redisServer: TestServer;
let natsServer: TestServer;
let natsMonitorPort: number;
let redis: RedisClient;
let dir: string;
let policyPath: string;
let kernel: SafetyKernelService;
let client: GrpcClient<SafetyKernelMethods>;
let health: GrpcClient<HealthMethods>;
let baselineClients: number;
let registry: Registry;

/** A counter's value on the kernel's registry (0 before its first increment). */
async function metricValue(name: string): Promise<number> {
  return (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
}

async function natsConnections(): Promise<number> {
  const connz = (await (await fetch(`http://127.0.0.1:${natsMonitorPort}/connz`)).json()) as { num_connections: number };
  return connz.num_connections;
}

async function connectedClients(): Promise<number> {
  const info = await redis.info('clients');
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]);
}

beforeAll(async () => {
  natsMonitorPort = await freePort();
  [redisServer, natsServer] = await Promise.all([startRedis(), startNats({ args: ['-m', String(natsMonitorPort)] })]);
  redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  baselineClients = await connectedClients();
  dir = mkdtempSync(join(tmpdir(), 'cordum-sk-'));
  policyPath = join(dir, 'safety.yaml');
  writeFileSync(policyPath, POLICY);
  const config = withInitialPolicy(
    loadSafetyKernelConfig({
      REDIS_URL: redisServer.url,
      NATS_URL: natsServer.url,
      SAFETY_KERNEL_GRPC_ADDR: '127.0.0.1:0',
      SAFETY_KERNEL_HTTP_ADDR: '127.0.0.1:0',
      SAFETY_POLICY_PATH: policyPath,
      CORDUM_INSTANCE_ID: 'sk-test',
    }),
  );
  const logger = createLogger({ service: 'safety-kernel', instance: 'sk-test', level: 'error', write: () => undefined });
  registry = createMetricsRegistry({ service: 'safety-kernel', pod: 'sk-test' });
  kernel = createSafetyKernel(config, { logger, registry, reloadOnSighup: false });
  await kernel.start();
  client = grpcClientFor(SafetyKernel, `127.0.0.1:${kernel.grpcPort}`, { defaultDeadlineMs: 5000 });
  health = grpcClientFor(Health, `127.0.0.1:${kernel.grpcPort}`, { defaultDeadlineMs: 5000 });
});

afterAll(async () => {
  client?.close();
  health?.close();
  await kernel?.stop();
  await closeRedis(redis);
  await redisServer.stop();
  await natsServer.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('SafetyKernel gRPC', () => {
  it('Check allows a job topic and names the rule and snapshot', async () => {
    const r = await client.check({ jobId: 'a1', topic: 'job.echo', tenant: 'acme' });
    expect(r.decision).toBe(Decision.ALLOW);
    expect(r.ruleId).toBe('allow-jobs');
    expect(r.policySnapshot).toBe(kernel.snapshotId);
    expect(r.policySnapshot).toMatch(/^[0-9a-f]{64}$/);
    expect(r.trace).toHaveLength(0);
  });

  it('Check denies non-job topics by default and destructive jobs by rule', async () => {
    const d = await client.check({ jobId: 'd1', topic: 'other.topic', tenant: 'acme' });
    expect(d.decision).toBe(Decision.DENY);
    expect(d.ruleId).toBe('');
    expect(d.reason).toContain('invalid topic "other.topic"');
    const r = await client.check({ jobId: 'd2', topic: 'job.echo', tenant: 'acme', meta: { riskTags: ['destructive'] } });
    expect(r.decision).toBe(Decision.DENY);
    expect(r.ruleId).toBe('deny-destructive');
    expect(r.reason).toBe('destructive operations are not allowed');
  });

  it('Check returns REQUIRE_HUMAN with approval_required for the alias require_human', async () => {
    const r = await client.check({ jobId: 'h1', topic: 'job.deploy', tenant: 'acme', labels: { env: 'prod' } });
    expect(r.decision).toBe(Decision.REQUIRE_HUMAN);
    expect(r.approvalRequired).toBe(true);
    expect(r.approvalRef).toBe('h1'); // P204: the hold names its job
    expect(r.ruleId).toBe('human-for-prod');
    expect((await client.evaluate({ jobId: 'h1e', topic: 'job.deploy', tenant: 'acme', labels: { env: 'prod' } })).approvalRef).toBe('h1e');
    // a different tenant with the same labels is not caught by the rule
    expect((await client.check({ jobId: 'h2', topic: 'job.deploy', tenant: 'globex', labels: { env: 'prod' } })).decision).toBe(Decision.ALLOW);
  });

  it('Check returns constraints for allow_with_constraints (actor type from meta)', async () => {
    const r = await client.check({ jobId: 'c1', topic: 'job.batch.etl', tenant: 't', meta: { actorType: ActorType.SERVICE } });
    expect(r.decision).toBe(Decision.ALLOW_WITH_CONSTRAINTS);
    expect(r.constraints).toMatchObject({ maxRuntimeMs: 60000n, maxRetries: 2, maxArtifactBytes: 1024n, maxConcurrentJobs: 3 });
    const human = await client.check({ jobId: 'c2', topic: 'job.batch.etl', tenant: 't', meta: { actorType: ActorType.HUMAN } });
    expect(human.decision).toBe(Decision.ALLOW);
  });

  it('Check records velocity once per job; Evaluate does not record', async () => {
    const req = (jobId: string) => ({ jobId, topic: 'job.llm.chat', tenant: 'velo' });
    for (let i = 0; i < 4; i++) expect((await client.evaluate(req(`ev${i}`))).decision).toBe(Decision.ALLOW);
    expect((await client.check(req('v1'))).decision).toBe(Decision.ALLOW);
    expect((await client.check(req('v1'))).decision).toBe(Decision.ALLOW);
    expect((await client.check(req('v2'))).decision).toBe(Decision.ALLOW);
    const t = await client.check(req('v3'));
    expect(t.decision).toBe(Decision.THROTTLE);
    expect(t.ruleId).toBe('throttle-llm');
    expect(t.retryAfterMs).toBeGreaterThan(0n);
    expect(await redis.zcard(safetyKeys.velocity('throttle-llm', 'tenant', 'velo'))).toBe(2);
  });

  it('Decide carries Check and Evaluate with the unary answers; only Check records velocity', async () => {
    const stream = createPolicyClient(`127.0.0.1:${kernel.grpcPort}`);
    try {
      const req = (jobId: string) => ({ jobId, topic: 'job.llm.chat', tenant: 'velo-stream' });
      const denied = { jobId: 's-d', topic: 'job.echo', tenant: 'acme', meta: { riskTags: ['destructive'] } };
      expect(await stream.check(denied, 5_000)).toEqual(await client.check(denied));
      for (let i = 0; i < 4; i++) expect((await stream.evaluate(req(`sev${i}`), 5_000)).decision).toBe(Decision.ALLOW);
      expect((await stream.check(req('s1'), 5_000)).decision).toBe(Decision.ALLOW);
      expect((await stream.check(req('s1'), 5_000)).decision).toBe(Decision.ALLOW);
      expect((await stream.check(req('s2'), 5_000)).decision).toBe(Decision.ALLOW);
      const t = await stream.check(req('s3'), 5_000);
      expect(t.decision).toBe(Decision.THROTTLE);
      expect(t.ruleId).toBe('throttle-llm');
      expect(await redis.zcard(safetyKeys.velocity('throttle-llm', 'tenant', 'velo-stream'))).toBe(2);
      expect(stream.transport).toBe('stream');
    } finally {
      stream.close();
    }
  });

  it('Explain returns the matched rule and why each earlier rule did not match', async () => {
    const r = await client.explain({ jobId: 'x1', topic: 'job.deploy', tenant: 'acme', labels: { env: 'prod' } });
    expect(r.decision).toBe(Decision.REQUIRE_HUMAN);
    expect(r.trace.map((t) => [t.ruleId, t.matched])).toEqual([
      ['deny-destructive', false],
      ['human-for-prod', true],
    ]);
    expect(r.trace[0]?.why).toContain('risk_tags');
  });

  it('Simulate evaluates a candidate policy without activating it', async () => {
    const before = kernel.snapshotId;
    const candidate = 'version: 1\ndefault_decision: allow\nrules:\n  - id: deny-echo\n    match: { topics: [job.echo] }\n    decision: deny\n';
    const other = await client.simulate({ jobId: 's1', topic: 'job.other', candidatePolicyYaml: candidate });
    expect(other.decision).toBe(Decision.ALLOW);
    expect(other.policySnapshot).not.toBe(before);
    const echo = await client.simulate({ jobId: 's2', topic: 'job.echo', candidatePolicyYaml: candidate });
    expect(echo.decision).toBe(Decision.DENY);
    expect(echo.ruleId).toBe('deny-echo');
    // the active policy is unchanged
    expect(kernel.snapshotId).toBe(before);
    expect((await client.check({ jobId: 's3', topic: 'other.topic' })).decision).toBe(Decision.DENY);
  });

  it('Simulate rejects an invalid candidate with INVALID_ARGUMENT and the load error', async () => {
    const bad = 'version: 1\ndefault_decision: deny\nrules:\n  - id: oops\n    match: { topicz: [x] }\n    decision: allow\n';
    await expect(client.simulate({ topic: 'job.x', candidatePolicyYaml: bad })).rejects.toMatchObject({
      code: GrpcStatus.INVALID_ARGUMENT,
      details: expect.stringContaining("rule 'oops'") as unknown,
    });
    await expect(client.simulate({ topic: 'job.x' })).rejects.toMatchObject({ code: GrpcStatus.INVALID_ARGUMENT });
    // P211: a candidate holding itself hung the kernel and ran it out of memory
    await expect(client.simulate({ topic: 'job.x', candidatePolicyYaml: 'x: &x {k: *x}' })).rejects.toMatchObject({
      code: GrpcStatus.INVALID_ARGUMENT,
      details: expect.stringContaining('an alias refers to its own anchor') as unknown,
    });
    expect((await client.check({ jobId: 'after-cycle', topic: 'job.echo' })).decision).toBe(Decision.ALLOW);
  });

  it('runs large simulations one at a time, answers Checks between them and refuses more than 2 waiting RESOURCE_EXHAUSTED (P146)', async () => {
    // A candidate of ~60 KiB (500 rules): its parse holds the event loop for tens of milliseconds.
    let big = 'version: 1\ndefault_decision: allow\nrules:\n';
    for (let i = 0; i < 500; i++) big += `  - id: r${i}\n    match: { topics: ["job.a${i}.>"], tenants: [t${i}], labels: { k${i}: v } }\n    decision: deny\n`;
    const refusedBefore = await metricValue('cordum_safety_simulations_refused_total');
    const done: string[] = [];
    const sims = Array.from({ length: 6 }, (_, i) =>
      client.simulate({ jobId: `big-${i}`, topic: 'job.a7.x', tenant: 't7', labels: { k7: 'v' }, candidatePolicyYaml: big }).then(
        (r) => {
          done.push(`sim-${i}`);
          return { ok: true as const, decision: r.decision, ruleId: r.ruleId };
        },
        (err: unknown) => {
          done.push(`sim-${i}`);
          return { ok: false as const, code: (err as { code?: number }).code, details: String((err as { details?: unknown }).details) };
        },
      ),
    );
    // Sent after them: answered in the first pause between two simulations, not after all of them.
    const check = client.check({ jobId: 'between', topic: 'job.echo', tenant: 'acme' }).then((r) => {
      done.push('check');
      return r;
    });
    const results = await Promise.all(sims);
    expect((await check).decision).toBe(Decision.ALLOW);
    const ran = results.filter((r) => r.ok);
    const refused = results.filter((r) => !r.ok);
    // Every answer is the candidate's decision or the refusal, never anything else.
    for (const r of ran) expect(r).toEqual({ ok: true, decision: Decision.DENY, ruleId: 'r7' });
    for (const r of refused) expect(r).toMatchObject({ ok: false, code: GrpcStatus.RESOURCE_EXHAUSTED, details: expect.stringContaining('other policy simulations') as unknown });
    // One runs, 2 wait, the rest are refused (before, all 6 ran at once; simulation-gate.spec has the exact order).
    expect(ran.length).toBeGreaterThanOrEqual(3);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(await metricValue('cordum_safety_simulations_refused_total')).toBe(refusedBefore + refused.length);
    const lastSim = Math.max(...results.map((_, i) => done.indexOf(`sim-${i}`)));
    expect(done.indexOf('check')).toBeLessThan(lastSim);
  });

  it('serves grpc.health.v1 SERVING for the server and the SafetyKernel service', async () => {
    expect((await health.check({ service: '' })).status).toBe(ServingStatus.SERVING);
    expect((await health.check({ service: 'cordum.v1.SafetyKernel' })).status).toBe(ServingStatus.SERVING);
    await expect(health.check({ service: 'nope' })).rejects.toMatchObject({ code: GrpcStatus.NOT_FOUND });
  });

  it('serves /readyz and the CONTRACT §7 metrics', async () => {
    const base = `http://127.0.0.1:${kernel.httpPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, checks: { policy: true, redis: true, nats: true, config: true } });
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/cordum_safety_decisions_total\{decision="allow"[^}]*\} [1-9]/);
    expect(text).toMatch(/cordum_safety_decisions_total\{decision="require_human"[^}]*\} [1-9]/);
    // SAFETY_DECISION_CACHE_TTL unset = cache off: every decision was evaluated, none looked up
    expect(text).toMatch(/^cordum_safety_decision_cache_lookups_total\{[^}]*\} 0$/m);
    expect(kernel.decisionCacheSize).toBe(0);
    expect(text).toMatch(/cordum_safety_check_duration_seconds_count\{[^}]*\} [1-9]/);
  });

  it('ListRules returns the active policy\'s rules in order with their source and spec', async () => {
    const r = await client.listRules({});
    expect(r.snapshot).toBe(kernel.snapshotId);
    expect(r.defaultDecision).toBe('deny');
    expect(r.rules.map((x) => [x.id, x.decision, x.source])).toEqual([
      ['deny-destructive', 'deny', 'file'],
      ['human-for-prod', 'require_approval', 'file'],
      ['throttle-llm', 'throttle', 'file'],
      ['bounded-batch', 'allow_with_constraints', 'file'],
      ['allow-jobs', 'allow', 'file'],
    ]);
    expect(r.rules[0]?.reason).toBe('destructive operations are not allowed');
    expect(JSON.parse(r.rules[2]?.specJson ?? '')).toEqual({ match: { topics: ['job.llm.>'] }, velocity: { max_requests: 2, window_seconds: 60, key: 'tenant' } });
  });

  it('ListSnapshots returns the current snapshot; reload records a new one; an invalid file keeps the old', async () => {
    const first = await client.listSnapshots({});
    expect(first.current).toBe(kernel.snapshotId);
    expect(first.snapshots[0]).toMatchObject({ id: first.current, ruleCount: 5 });

    writeFileSync(policyPath, `${POLICY}  - id: extra\n    match: {}\n    decision: deny\n`);
    const ok = await kernel.reloadPolicy();
    expect(ok).toMatchObject({ ok: true, changed: true });
    const second = await client.listSnapshots({});
    expect(second.current).not.toBe(first.current);
    expect(second.snapshots.map((s) => s.id)).toEqual([second.current, first.current]);
    expect(second.snapshots[0]?.ruleCount).toBe(6);
    expect(await redis.zrange(safetyKeys.snapshots(), '0', '-1')).toEqual([first.current, second.current]);

    writeFileSync(policyPath, 'version: 1\ndefault_decision: maybe\n');
    const bad = await kernel.reloadPolicy();
    expect(bad.ok).toBe(false);
    expect(kernel.snapshotId).toBe(second.current);
    expect((await client.check({ jobId: 'r1', topic: 'job.echo' })).policySnapshot).toBe(second.current);
    // The snapshot it evaluates with is a metric: one series, the current id only (P109).
    const text = await (await fetch(`http://127.0.0.1:${kernel.httpPort}/metrics`)).text();
    const series = text.split('\n').filter((l) => l.startsWith('cordum_safety_policy_snapshot_info{'));
    expect(series).toHaveLength(1);
    expect(series[0]).toContain(`snapshot="${second.current}"`);
    expect(series[0]).toMatch(/ 1$/);
  });

  it('keeps at most 10 snapshots in Redis', async () => {
    for (let i = 0; i < 12; i++) {
      writeFileSync(policyPath, `version: 1\ndefault_decision: deny\nrules:\n  - id: r${i}\n    decision: allow\n`);
      expect((await kernel.reloadPolicy()).ok).toBe(true);
    }
    expect(await redis.zcard(safetyKeys.snapshots())).toBe(10);
    const list = await client.listSnapshots({});
    expect(list.snapshots).toHaveLength(10);
    expect(list.snapshots[0]?.id).toBe(list.current);
    // P252: the trimmed snapshots' meta keys went with them; the kept ones have theirs.
    const metas = (await redis.keys(safetyKeys.snapshotMeta('*'))).sort();
    expect(metas).toEqual(list.snapshots.map((s) => safetyKeys.snapshotMeta(s.id)).sort());
  });
});

describe('shutdown', () => {
  it('stop is idempotent and releases its Redis and NATS connections', async () => {
    expect(await natsConnections()).toBe(1);
    client.close();
    health.close();
    // A client's open Decide stream is ended by the kernel (drain), so the gRPC server closes
    // gracefully instead of waiting for its GRPC_DRAIN_MS force-shutdown (5 s).
    const stream = createPolicyClient(`127.0.0.1:${kernel.grpcPort}`);
    expect((await stream.check({ jobId: 'last', topic: 'job.echo', tenant: 'acme' }, 5_000)).decision).toBe(Decision.ALLOW);
    const stopping = Date.now();
    await Promise.all([kernel.stop(), kernel.stop()]);
    expect(Date.now() - stopping).toBeLessThan(4_000);
    stream.close();
    await kernel.stop();
    await waitFor(async () => (await connectedClients()) === baselineClients, 5000, { message: 'redis clients back to baseline' });
    await waitFor(async () => (await natsConnections()) === 0, 5000, { message: 'nats connections closed' });
    await expect(kernel.start()).rejects.toThrow(/stopped/);
  });
});
