import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundledPolicyPath, loadSafetyKernelConfig, withInitialPolicy } from '../src/config';
import { BUILTIN_DEFAULT_POLICY } from '../src/policy/source';

describe('safety-kernel config', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-sk-cfg-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('defaults to :50051 / :9095 and the policy beside the bundle (D37)', () => {
    const c = loadSafetyKernelConfig({});
    expect(c.grpcAddr).toEqual({ host: '', port: 50051 });
    expect(c.httpAddr).toEqual({ host: '', port: 9095 });
    expect(c.policy).toEqual({ path: bundledPolicyPath(), explicit: false });
    expect(c.redis.url).toBe('redis://127.0.0.1:6379');
  });

  it('names the variable for a bad address', () => {
    expect(() => loadSafetyKernelConfig({ SAFETY_KERNEL_GRPC_ADDR: 'nope' })).toThrow(/SAFETY_KERNEL_GRPC_ADDR/);
  });

  it('falls back to the built-in default only when the path was not set explicitly', () => {
    const implicit = withInitialPolicy({ ...loadSafetyKernelConfig({}), policy: { path: join(dir, 'absent.yaml'), explicit: false } });
    expect(implicit.policySource).toBe('builtin');
    expect(implicit.initialPolicy).toEqual(BUILTIN_DEFAULT_POLICY);
    expect(() => withInitialPolicy(loadSafetyKernelConfig({ SAFETY_POLICY_PATH: join(dir, 'absent.yaml') }))).toThrow(
      expect.objectContaining({ code: 'config_invalid', message: expect.stringMatching(/^invalid config: SAFETY_POLICY_PATH .*absent\.yaml.*ENOENT/) as unknown }),
    );
  });

  it('loads an explicit file and rejects an invalid one with one line', () => {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'version: 1\ndefault_decision: allow\n');
    const c = withInitialPolicy(loadSafetyKernelConfig({ SAFETY_POLICY_PATH: good }));
    expect(c.policySource).toBe('file');
    expect(c.initialPolicy.default_decision).toBe('allow');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'version: 1\ndefault_decision: deny\nrules:\n  - id: x\n    decision: nope\n');
    let msg = '';
    try {
      withInitialPolicy(loadSafetyKernelConfig({ SAFETY_POLICY_PATH: bad }));
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/SAFETY_POLICY_PATH .*rule 'x'.*decision/);
    expect(msg).not.toContain('\n');
  });

  it('decision cache is off by default (TTL 0, max 10000); durations and sizes are validated', () => {
    const d = loadSafetyKernelConfig({});
    expect(d.decisionCache).toEqual({ ttlMs: 0, maxSize: 10_000 });
    expect(d.configReloadIntervalMs).toBe(30_000);
    expect(d.nats).toEqual({ servers: ['nats://127.0.0.1:4222'] });
    // The NATS login of the common env (natsConnectionConfig), as every service reads it.
    expect(loadSafetyKernelConfig({ NATS_URL: 'nats://kernel:pw@n1:4222,nats://kernel:pw@n2:4222' }).nats).toEqual({ servers: ['nats://n1:4222', 'nats://n2:4222'], user: 'kernel', password: 'pw' });
    expect(() => loadSafetyKernelConfig({ NATS_TOKEN: 't', NATS_USER: 'u', NATS_PASSWORD: 'p' })).toThrow('invalid config: NATS_USER and NATS_TOKEN(_FILE) are set together');
    const c = loadSafetyKernelConfig({ SAFETY_DECISION_CACHE_TTL: '5s', SAFETY_DECISION_CACHE_MAX_SIZE: '500', CORDUM_CONFIG_RELOAD_INTERVAL: '2s' });
    expect(c.decisionCache).toEqual({ ttlMs: 5000, maxSize: 500 });
    expect(c.configReloadIntervalMs).toBe(2000);
    expect(loadSafetyKernelConfig({ SCHEDULER_CONFIG_RELOAD_INTERVAL: '750ms' }).configReloadIntervalMs).toBe(750);
    expect(() => loadSafetyKernelConfig({ SAFETY_DECISION_CACHE_TTL: 'soon' })).toThrow(/SAFETY_DECISION_CACHE_TTL/);
    expect(() => loadSafetyKernelConfig({ SAFETY_DECISION_CACHE_MAX_SIZE: '0' })).toThrow(/SAFETY_DECISION_CACHE_MAX_SIZE/);
    expect(() => loadSafetyKernelConfig({ CORDUM_CONFIG_RELOAD_INTERVAL: '0s' })).toThrow(/CORDUM_CONFIG_RELOAD_INTERVAL/);
  });
});
