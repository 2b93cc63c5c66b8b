import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@cordum/service-kit';
import { repoRoot } from '@cordum/testing';
import { loadSchedulerConfig } from '../src/config';
import { timeoutsFromSection } from '../src/routing-config';

describe('loadSchedulerConfig', () => {
  const empty = mkdtempSync(join(tmpdir(), 'sched-cfg-'));

  it('applies CONTRACT §1 defaults and falls back to built-in routing when the bundled copies are absent', () => {
    const c = loadSchedulerConfig({}, empty);
    expect(c).toMatchObject({
      httpAddr: { host: '', port: 9090 },
      safetyKernelAddr: '127.0.0.1:50051',
      jobTtlMs: 7 * 24 * 3600 * 1000,
      dispatchUntracked: false,
      nats: { servers: ['nats://127.0.0.1:4222'] },
      pools: { topics: {}, pools: {} },
      poolsSource: 'built-in defaults',
      timeouts: { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300, scan_interval_seconds: 30 } },
    });
  });

  it('reads the bundled config/ beside the bundle by default (D37)', () => {
    const c = loadSchedulerConfig({}, repoRoot);
    expect(c.poolsSource).toBe(join(repoRoot, 'config', 'pools.yaml'));
    expect(c.pools.topics['job.echo']).toEqual(['default']);
  });

  it('parses env overrides', () => {
    const c = loadSchedulerConfig({ SCHEDULER_HTTP_ADDR: '127.0.0.1:9190', JOB_TTL: '1h', SCHEDULER_DISPATCH_UNTRACKED: 'true', SAFETY_KERNEL_ADDR: 'dns:///kernel:50051' }, empty);
    expect(c).toMatchObject({ httpAddr: { host: '127.0.0.1', port: 9190 }, jobTtlMs: 3_600_000, dispatchUntracked: true, safetyKernelAddr: 'dns:///kernel:50051' });
  });

  it('defaults and validates the recovery knobs (BEHAVIOURS §3, §4, D13)', () => {
    expect(loadSchedulerConfig({}, empty)).toMatchObject({
      verify: { enabled: true, delayMs: 10_000 },
      snapshot: { intervalMs: 5_000, lockTtlMs: 30_000, readTimeoutMs: 5_000, hydrateFloorMs: 20_000 },
      replay: { intervalMs: 1_000, pendingAgeMs: 30_000, maxScheduleTries: 50, maxScheduleWaitMs: 600_000 },
      leader: { ttlMs: 15_000, renewMs: 5_000 },
      jobLockTtlMs: 30_000,
    });
    expect(loadSchedulerConfig({ SCHEDULER_DISPATCH_VERIFY_ENABLED: 'false', SCHEDULER_DISPATCH_VERIFY_DELAY: '60s' }, empty).verify).toEqual({ enabled: false, delayMs: 60_000 });
    expect(() => loadSchedulerConfig({ SCHEDULER_DISPATCH_VERIFY_DELAY: '500ms' }, empty)).toThrow(/^invalid config: SCHEDULER_DISPATCH_VERIFY_DELAY .*between 1s and 60s/);
    expect(() => loadSchedulerConfig({ SCHEDULER_DISPATCH_VERIFY_DELAY: '61s' }, empty)).toThrow(/SCHEDULER_DISPATCH_VERIFY_DELAY/);
    expect(() => loadSchedulerConfig({ SCHEDULER_JOB_LOCK_TTL: '1s' }, empty)).toThrow(/SCHEDULER_JOB_LOCK_TTL/);
    // P288: the gateways' 30 s online window bounds both
    expect(loadSchedulerConfig({ WORKER_SNAPSHOT_INTERVAL: '15s', WORKER_SNAPSHOT_LOCK_TTL: '30s' }, empty).snapshot).toMatchObject({ intervalMs: 15_000, lockTtlMs: 30_000 });
    expect(() => loadSchedulerConfig({ WORKER_SNAPSHOT_INTERVAL: '60s' }, empty)).toThrow(/^invalid config: WORKER_SNAPSHOT_INTERVAL .*between 100ms and 15s/);
    expect(() => loadSchedulerConfig({ WORKER_SNAPSHOT_LOCK_TTL: '10m' }, empty)).toThrow(/^invalid config: WORKER_SNAPSHOT_LOCK_TTL .*between 1s and 30s/);
  });

  it('defaults the scheduler section to fail closed (D19) and takes env overrides; the breaker uses the D21 numbers', () => {
    const d = loadSchedulerConfig({}, empty);
    expect(d.failModes).toEqual({ inputFailMode: 'closed', outputFailMode: 'closed', outputPolicyEnabled: false });
    expect(d.safetyBreaker).toEqual({ failureThreshold: 3, windowMs: 30_000, openMs: 10_000, probeIntervalMs: 2_000, closeAfterSuccesses: 2, closedCacheMs: 250 });
    expect(d.safetyDeadlineMs).toBe(2_000);
    const o = loadSchedulerConfig({ SCHEDULER_INPUT_FAIL_MODE: 'open', SCHEDULER_OUTPUT_FAIL_MODE: 'open', SCHEDULER_OUTPUT_POLICY_ENABLED: 'true' }, empty);
    expect(o.failModes).toEqual({ inputFailMode: 'open', outputFailMode: 'open', outputPolicyEnabled: true });
    expect(() => loadSchedulerConfig({ SCHEDULER_INPUT_FAIL_MODE: 'ajar' }, empty)).toThrow(/^invalid config: SCHEDULER_INPUT_FAIL_MODE/);
  });

  it('fails with one line naming the variable', () => {
    expect(() => loadSchedulerConfig({ JOB_TTL: 'soon' }, empty)).toThrow(/^invalid config: JOB_TTL .*"soon"/);
    expect(loadSchedulerConfig({ JOB_TTL: '7d' }, empty).jobTtlMs).toBe(7 * 86_400_000);
    // P238: DLQ_TTL defaults to D45's 30 d, takes 1h to 30d
    expect(loadSchedulerConfig({}, empty).dlqTtlMs).toBe(30 * 86_400_000);
    expect(loadSchedulerConfig({ DLQ_TTL: '2d' }, empty).dlqTtlMs).toBe(2 * 86_400_000);
    expect(() => loadSchedulerConfig({ DLQ_TTL: '59m' }, empty)).toThrow(/^invalid config: DLQ_TTL must be between 1h and 30d/);
    // refused at load (exit 2, one line), not after Redis and NATS are connected
    expect(() => loadSchedulerConfig({ SAFETY_KERNEL_ADDR: 'http://kernel:50051' }, empty)).toThrow(
      // P217: the message quotes the value already, so no "(got …)" repeats it
      'invalid config: SAFETY_KERNEL_ADDR use host:port or dns:///host:port, not a URL: "http://kernel:50051"',
    );
    expect(() => loadSchedulerConfig({ SAFETY_KERNEL_ADDR: 'kernel-a:50051,kernel-b' }, empty)).toThrow(/^invalid config: SAFETY_KERNEL_ADDR bad host:port "kernel-b"/);
    // P61: the verification key is read and checked at start
    expect(() => loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: join(empty, 'none.pem') }, empty)).toThrow(/^invalid config: CAP_VERIFY_KEY_FILE cannot read ".*none\.pem": ENOENT/);
    const notKey = join(empty, 'not-a-key.pem');
    writeFileSync(notKey, 'hello\n');
    expect(() => loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: notKey }, empty)).toThrow(/^invalid config: CAP_VERIFY_KEY_FILE cannot parse public key/);
    // P196: verifying needs the private key of the same pair (its own JobCancels are verified too)
    const pair = (name: string) => {
      const k = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const pub = join(empty, `${name}.pub.pem`);
      const priv = join(empty, `${name}.key.pem`);
      writeFileSync(pub, k.publicKey.export({ type: 'spki', format: 'pem' }));
      writeFileSync(priv, k.privateKey.export({ type: 'pkcs8', format: 'pem' }));
      return { pub, priv };
    };
    const [a, b] = [pair('a'), pair('b')];
    expect(() => loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: a.pub }, empty)).toThrow(/^invalid config: CAP_VERIFY_KEY_FILE needs CAP_SIGNING_KEY_FILE too/);
    expect(() => loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: a.pub, CAP_SIGNING_KEY_FILE: b.priv }, empty)).toThrow(/^invalid config: CAP_SIGNING_KEY_FILE is not the private key of a key in CAP_VERIFY_KEY_FILE/);
    // P201: a rotation's file holds the old and the new public key; the signing key is one of them
    const rotation = join(empty, 'rotation.pub.pem');
    writeFileSync(rotation, `${readFileSync(a.pub, 'utf8')}${readFileSync(b.pub, 'utf8')}`);
    expect(loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: rotation, CAP_SIGNING_KEY_FILE: b.priv }, empty).capVerifyKey).toHaveLength(2);
    expect(loadSchedulerConfig({ CAP_VERIFY_KEY_FILE: a.pub, CAP_SIGNING_KEY_FILE: a.priv }, empty).capVerifyKey).toBeDefined();
    expect(loadSchedulerConfig({ CAP_SIGNING_KEY_FILE: b.priv }, empty).capSigningKey).toBeDefined();
    expect(() => loadSchedulerConfig({ POOL_CONFIG_PATH: join(empty, 'missing.yaml') }, empty)).toThrow(/^invalid config: POOL_CONFIG_PATH cannot read/);
    const bad = join(empty, 'bad.yaml');
    writeFileSync(bad, 'topics: [not, a, map]\n');
    expect(() => loadSchedulerConfig({ POOL_CONFIG_PATH: bad }, empty)).toThrow(/^invalid config: POOL_CONFIG_PATH .*topics/);
    // An empty file merged replaced the fleet's live routing with nothing; {} on purpose still loads.
    for (const [name, text] of [['zero.yaml', ''], ['comments.yaml', '# truncated\n']] as const) {
      const f = join(empty, name);
      writeFileSync(f, text);
      expect(() => loadSchedulerConfig({ POOL_CONFIG_PATH: f }, empty)).toThrow(`invalid config: POOL_CONFIG_PATH ${f} is empty; write the pools section in it (or {} for an empty one on purpose)`);
      expect(() => loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: f }, empty)).toThrow(/^invalid config: TIMEOUT_CONFIG_PATH .* is empty/);
    }
    const braces = join(empty, 'braces.yaml');
    writeFileSync(braces, '{}\n');
    expect(loadSchedulerConfig({ POOL_CONFIG_PATH: braces }, empty).bootstrapFiles[0]?.content).toEqual({});
    // a YAML warning (an unknown tag read as a plain string) is an error too
    const tag = join(empty, 'tag.yaml');
    writeFileSync(tag, 'topics: !!js/function "x"\n');
    expect(() => loadSchedulerConfig({ POOL_CONFIG_PATH: tag }, empty)).toThrow(/^invalid config: POOL_CONFIG_PATH .* is not YAML: .*js\/function/);
    // P211: an alias inside its own anchor ran the scheduler out of memory at start
    const cyclic = join(empty, 'cyclic.yaml');
    writeFileSync(cyclic, 'pools: &p {default: {requires: [], x: *p}}\n');
    expect(() => loadSchedulerConfig({ POOL_CONFIG_PATH: cyclic }, empty)).toThrow(/^invalid config: POOL_CONFIG_PATH .* is not YAML: an alias refers to its own anchor/);
    expect(() => loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: cyclic }, empty)).toThrow(/^invalid config: TIMEOUT_CONFIG_PATH .* is not YAML: an alias refers to its own anchor/);
  });

  it('SCHEDULER_APPROVAL_TIMEOUT is below JOB_TTL, by default 6/7 of it, so a held job ends before its record expires (P99)', () => {
    expect(loadSchedulerConfig({}, empty).approvalTimeoutMs).toBe(6 * 86_400_000);
    expect(loadSchedulerConfig({ JOB_TTL: '1h' }, empty).approvalTimeoutMs).toBe(Math.floor((3_600_000 * 6) / 7));
    expect(loadSchedulerConfig({ SCHEDULER_APPROVAL_TIMEOUT: '24h' }, empty).approvalTimeoutMs).toBe(86_400_000);
    // within one approval pass and a margin of the record's expiry is too close (P99 review)
    expect(() => loadSchedulerConfig({ SCHEDULER_APPROVAL_TIMEOUT: '7d' }, empty)).toThrow(/^invalid config: SCHEDULER_APPROVAL_TIMEOUT must be between 1s and JOB_TTL minus 2m/);
    expect(() => loadSchedulerConfig({ JOB_TTL: '1h', SCHEDULER_APPROVAL_TIMEOUT: '59m' }, empty)).toThrow(/SCHEDULER_APPROVAL_TIMEOUT must be between 1s and JOB_TTL minus 2m \(3480000 ms\)/);
    expect(loadSchedulerConfig({ JOB_TTL: '1h', SCHEDULER_APPROVAL_TIMEOUT: '58m' }, empty).approvalTimeoutMs).toBe(58 * 60_000);
    expect(() => loadSchedulerConfig({ SCHEDULER_APPROVAL_TIMEOUT: '500ms' }, empty)).toThrow(/^invalid config: SCHEDULER_APPROVAL_TIMEOUT must be between 1s/);
    expect(() => loadSchedulerConfig({ SCHEDULER_APPROVAL_TIMEOUT: 'soon' }, empty)).toThrow(/^invalid config: SCHEDULER_APPROVAL_TIMEOUT/);
    // never a timer (P193): past Node's 24.8-day timer range, up to JOB_TTL minus 2m
    expect(loadSchedulerConfig({ JOB_TTL: '30d', SCHEDULER_APPROVAL_TIMEOUT: '28d' }, empty).approvalTimeoutMs).toBe(28 * 86_400_000);
    expect(() => loadSchedulerConfig({ JOB_TTL: '30d', SCHEDULER_APPROVAL_TIMEOUT: '30d' }, empty)).toThrow(/SCHEDULER_APPROVAL_TIMEOUT must be between 1s and JOB_TTL minus 2m/);
  });

  it('SCHEDULER_SCHEDULE_MAX_WAIT is below JOB_TTL, by default 10 min or that bound, so a job waiting for a worker fails before its record expires (P234)', () => {
    expect(loadSchedulerConfig({}, empty).replay.maxScheduleWaitMs).toBe(600_000);
    // A short JOB_TTL: the default gives way (before: 10 min, past the record's 10 min life).
    expect(loadSchedulerConfig({ JOB_TTL: '10m' }, empty).replay.maxScheduleWaitMs).toBe(8 * 60_000);
    expect(loadSchedulerConfig({ JOB_TTL: '2m' }, empty).replay.maxScheduleWaitMs).toBe(60_000);
    expect(() => loadSchedulerConfig({ JOB_TTL: '10m', SCHEDULER_SCHEDULE_MAX_WAIT: '10m' }, empty)).toThrow(/^invalid config: SCHEDULER_SCHEDULE_MAX_WAIT must be at most JOB_TTL minus 2m \(480000 ms\)/);
    expect(loadSchedulerConfig({ JOB_TTL: '10m', SCHEDULER_SCHEDULE_MAX_WAIT: '8m' }, empty).replay.maxScheduleWaitMs).toBe(8 * 60_000);
    expect(() => loadSchedulerConfig({ SCHEDULER_SCHEDULE_MAX_WAIT: '500ms' }, empty)).toThrow(/^invalid config: SCHEDULER_SCHEDULE_MAX_WAIT/);
  });

  it('keeps the files as written for the bootstrap merge (D35) and reads the reload interval (D36)', () => {
    const c = loadSchedulerConfig({}, repoRoot);
    expect(c.bootstrapFiles.map((f) => [f.section, f.fileHashMetaKey, f.source])).toEqual([
      ['pools', '_poolsFileHash', join(repoRoot, 'config', 'pools.yaml')],
      ['timeouts', '_timeoutsFileHash', join(repoRoot, 'config', 'timeouts.yaml')],
    ]);
    expect(c.bootstrapFiles[0]?.content).toEqual({ topics: { 'job.echo': ['default'], 'job.default': ['default'] }, pools: { default: { requires: [] } } });
    expect(c.configReloadIntervalMs).toBe(30_000);
    expect(loadSchedulerConfig({}, empty).bootstrapFiles).toEqual([]);
    expect(loadSchedulerConfig({ SCHEDULER_CONFIG_RELOAD_INTERVAL: '2s' }, empty).configReloadIntervalMs).toBe(2_000);

    // As written (no defaults filled in), fractions allowed, 0 = default for the applied value.
    const t = join(empty, 'timeouts.yaml');
    writeFileSync(t, 'reconciler:\n  scan_interval_seconds: 0.3\n  dispatch_timeout_seconds: 0\n');
    const withFile = loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: t }, empty);
    expect(withFile.bootstrapFiles).toEqual([{ section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: { reconciler: { scan_interval_seconds: 0.3, dispatch_timeout_seconds: 0 } }, source: t }]);
    expect(withFile.timeouts).toEqual({ reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300, scan_interval_seconds: 0.3 } });
    writeFileSync(t, 'reconciler:\n  scan_interval_seconds: -1\n');
    expect(() => loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: t }, empty)).toThrow(/^invalid config: TIMEOUT_CONFIG_PATH .*reconciler\.scan_interval_seconds/);
    // A floor of 0.1 s, as for a PUT: 0.001 was a leader scanning every millisecond.
    writeFileSync(t, 'reconciler:\n  scan_interval_seconds: 0.001\n');
    expect(() => loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: t }, empty)).toThrow(
      `invalid config: TIMEOUT_CONFIG_PATH ${t}: timeouts.reconciler.scan_interval_seconds: must be 0 (the default) or at least 0.1 (100 ms)`,
    );
    writeFileSync(t, 'reconciler:\n  scan_interval_seconds: 0.1\n');
    expect(loadSchedulerConfig({ TIMEOUT_CONFIG_PATH: t }, empty).timeouts.reconciler.scan_interval_seconds).toBe(0.1);
    // A live document stored before the floor is applied raised to it, never refused (a refused
    // section would leave an upgraded scheduler unable to finish its first config load).
    expect(timeoutsFromSection({ reconciler: { scan_interval_seconds: 0.05 } }).reconciler.scan_interval_seconds).toBe(0.1);
  });

  it('a file naming a key no section has stops the start with one line naming the file and the key path (P66 check, as for a PUT)', () => {
    const p = join(empty, 'typo-pools.yaml');
    // `topic:` for `topics:` used to load and route nothing.
    writeFileSync(p, '# routing\ntopic:\n  job.echo: [default]\npools:\n  default:\n    requires: []\n');
    const msg = (env: Record<string, string>): string => {
      try {
        loadSchedulerConfig(env, empty);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };
    expect(msg({ POOL_CONFIG_PATH: p })).toBe(`invalid config: POOL_CONFIG_PATH ${p}: pools.topic: unknown field; pools takes topics, pools`);
    writeFileSync(p, 'topics:\n  job.gpu: [gpu]\npools:\n  gpu:\n    require: [cuda]\n');
    expect(msg({ POOL_CONFIG_PATH: p })).toBe(`invalid config: POOL_CONFIG_PATH ${p}: pools.pools.gpu.require: unknown field; pools.pools.gpu takes requires`);
    const t = join(empty, 'typo-timeouts.yaml');
    // A misspelt timeout silently gave the default.
    writeFileSync(t, 'reconciler:\n  dispatch_timout_seconds: 5\n');
    expect(msg({ TIMEOUT_CONFIG_PATH: t })).toBe(
      `invalid config: TIMEOUT_CONFIG_PATH ${t}: timeouts.reconciler.dispatch_timout_seconds: unknown field; timeouts.reconciler takes dispatch_timeout_seconds, running_timeout_seconds, scan_interval_seconds`,
    );
    writeFileSync(t, 'reconcilers: {}\n');
    expect(msg({ TIMEOUT_CONFIG_PATH: t })).toBe(`invalid config: TIMEOUT_CONFIG_PATH ${t}: timeouts.reconcilers: unknown field; timeouts takes reconciler`);
    // Topic and pool names stay free; the repo's own files load.
    writeFileSync(p, 'topics:\n  job.anything-at-all: [constructor]\npools:\n  constructor: {}\n');
    expect(loadSchedulerConfig({ POOL_CONFIG_PATH: p }, empty).pools).toEqual({ topics: { 'job.anything-at-all': ['constructor'] }, pools: { constructor: { requires: [] } } });
    expect(loadSchedulerConfig({}, repoRoot).bootstrapFiles).toHaveLength(2);
  });
});
