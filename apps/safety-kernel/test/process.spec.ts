import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decision, SafetyKernel, grpcClientFor } from '@cordum/protocol';
import { freePorts, spawnService, startNats, startRedis, stopAll, waitFor, type ManagedProcess, type TestServer } from '@cordum/testing';

// Runs the built bundle (npx nx build safety-kernel) the way operators do:
// `node dist/apps/safety-kernel/main.js`, env vars only, from another directory.

let redis: TestServer;
let nats: TestServer;
let cwd: string;
const procs: ManagedProcess[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([startRedis(), startNats()]);
  cwd = mkdtempSync(join(tmpdir(), 'cordum-sk-proc-'));
});

afterAll(async () => {
  await stopAll(procs);
  await redis.stop();
  await nats.stop();
  rmSync(cwd, { recursive: true, force: true });
});

describe('safety-kernel process', () => {
  it('starts from another cwd with the bundled policy, answers Check, exits 0 on SIGTERM within 15 s', async () => {
    const [grpcPort, httpPort] = await freePorts(2);
    const proc = spawnService('safety-kernel', {
      REDIS_URL: redis.url,
      NATS_URL: nats.url,
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      CORDUM_INSTANCE_ID: 'sk-proc',
    }, { cwd });
    procs.push(proc);
    await waitFor(async () => {
      if (!proc.running) throw new Error(`exited early: ${proc.logs()}`);
      return (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200;
    }, 20_000, { message: 'kernel ready' });
    const client = grpcClientFor(SafetyKernel, `127.0.0.1:${grpcPort}`, { defaultDeadlineMs: 5000 });
    try {
      // the bundled config/safety.yaml (D22 default, P11): no rules, default_decision allow
      const allow = await client.check({ jobId: 'p1', topic: 'job.echo', tenant: 'default' });
      expect(allow.decision).toBe(Decision.ALLOW);
      expect(allow.ruleId).toBe('');
      expect((await client.listRules({})).defaultDecision).toBe('allow');
    } finally {
      client.close();
    }
    expect(proc.hasLine('"source":"file"')).toBe(true);
    const started = Date.now();
    proc.kill('SIGTERM');
    const exit = await proc.waitExit(15_000);
    expect(exit.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('reloads the policy file on SIGHUP (flushing the decision cache); an invalid file keeps the previous policy', async () => {
    const [grpcPort, httpPort] = await freePorts(2);
    const file = join(cwd, 'hup.yaml');
    writeFileSync(file, 'version: 1\ndefault_decision: deny\n');
    const proc = spawnService('safety-kernel', {
      REDIS_URL: redis.url,
      NATS_URL: nats.url,
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      SAFETY_POLICY_PATH: file,
      // cache on with a long TTL: the switch below only shows if SIGHUP flushes it
      SAFETY_DECISION_CACHE_TTL: '10m',
    }, { cwd });
    procs.push(proc);
    const client = grpcClientFor(SafetyKernel, `127.0.0.1:${grpcPort}`, { defaultDeadlineMs: 5000 });
    try {
      await waitFor(() => client.check({ jobId: 'h0', topic: 'job.echo' }).then(() => true), 20_000, { message: 'kernel serving' });
      expect((await client.check({ jobId: 'h1', topic: 'job.echo' })).decision).toBe(Decision.DENY);
      expect((await client.check({ jobId: 'h1b', topic: 'job.echo' })).decision).toBe(Decision.DENY);
      const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      expect(metrics).toMatch(/^cordum_safety_decision_cache_hits_total\{[^}]*\} [1-9]/m);
      writeFileSync(file, 'version: 1\ndefault_decision: allow\n');
      proc.kill('SIGHUP');
      await waitFor(async () => (await client.check({ jobId: 'h2', topic: 'job.echo' })).decision === Decision.ALLOW, 10_000, { message: 'reloaded' });
      writeFileSync(file, 'version: 1\ndefault_decision: perhaps\n');
      proc.kill('SIGHUP');
      await waitFor(() => proc.hasLine('policy reload rejected'), 10_000, { message: 'reload rejected' });
      expect(proc.running).toBe(true);
      expect((await client.check({ jobId: 'h3', topic: 'job.echo' })).decision).toBe(Decision.ALLOW);
    } finally {
      client.close();
    }
    await proc.stop();
    expect(proc.exit?.code).toBe(0);
  });

  it('a SIGHUP while it is still starting (waiting for NATS) does not end it, and it still stops cleanly (P179)', async () => {
    const [grpcPort, httpPort, natsPort] = await freePorts(3);
    const file = join(cwd, 'hup-start.yaml');
    writeFileSync(file, 'version: 1\ndefault_decision: deny\n');
    const proc = spawnService('safety-kernel', {
      REDIS_URL: redis.url,
      NATS_URL: `nats://127.0.0.1:${natsPort}`, // nothing there yet
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      SAFETY_POLICY_PATH: file,
    }, { cwd });
    procs.push(proc);
    await waitFor(() => proc.hasLine('bus: NATS not reachable at start, waiting for it'), 20_000, { message: 'waiting for NATS' });
    writeFileSync(file, 'version: 1\ndefault_decision: allow\n');
    proc.kill('SIGHUP');
    // Before P179 Node's default for SIGHUP ended the process here (no listener yet).
    await waitFor(() => proc.hasLine('SIGHUP received while the kernel is not running') || !proc.running, 10_000, { message: 'the SIGHUP handled' });
    expect(proc.running).toBe(true);
    await proc.stop();
    expect(proc.exit?.code).toBe(0);
  });

  it('exits 2 with one stderr line naming SAFETY_POLICY_PATH when the file cannot be read', async () => {
    const [grpcPort, httpPort] = await freePorts(2);
    const proc = spawnService('safety-kernel', {
      REDIS_URL: redis.url,
      NATS_URL: nats.url,
      SAFETY_KERNEL_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      SAFETY_KERNEL_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      SAFETY_POLICY_PATH: join(cwd, 'missing.yaml'),
    }, { cwd });
    procs.push(proc);
    expect((await proc.waitExit(15_000)).code).toBe(2);
    expect(proc.output).toHaveLength(1);
    expect(proc.output[0]).toContain('SAFETY_POLICY_PATH');
    expect(proc.output[0]).toContain('missing.yaml');
  });

  it('exits 2 naming SAFETY_POLICY_PATH and the rule when the file is invalid', async () => {
    const bad = join(cwd, 'bad.yaml');
    writeFileSync(bad, 'version: 1\ndefault_decision: deny\nrules:\n  - id: broken\n    match: { tenant: [x] }\n    decision: allow\n');
    const proc = spawnService('safety-kernel', { REDIS_URL: redis.url, NATS_URL: nats.url, SAFETY_POLICY_PATH: bad }, { cwd });
    procs.push(proc);
    expect((await proc.waitExit(15_000)).code).toBe(2);
    expect(proc.output).toHaveLength(1);
    expect(proc.output[0]).toMatch(/SAFETY_POLICY_PATH.*rule 'broken'.*match\.tenant: unknown key/);
  });
});
