import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { Latch, startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import {
  configStatus,
  createConfigStore,
  createConfigWatcher,
  decodeConfigChanged,
  hashValue,
  publishConfigChanged,
  sectionHash,
  writeAppliedReport,
  type AppliedReport,
  type BootstrapFile,
  type ConfigStore,
  type ConfigWatcher,
  type SectionSetter,
} from '../src';
import { capturingLogger, metricLabels, metricValue, type CapturedLogger } from './helpers';

interface Recorder {
  calls: { value: unknown; hash: string | null }[];
  setter: SectionSetter;
  /** When set, the setter awaits it (to hold a reload in flight). */
  gate?: Latch;
  /** Throws once for this hash. */
  failOnceFor?: string | null;
}

function recorder(): Recorder {
  const r: Recorder = {
    calls: [],
    setter: async (value, hash) => {
      r.calls.push({ value, hash });
      if (r.gate) await r.gate.promise;
      if (r.failOnceFor !== undefined && r.failOnceFor === hash) {
        r.failOnceFor = undefined;
        throw new Error('setter boom');
      }
    },
  };
  return r;
}

describe('config watcher (real Redis + NATS)', () => {
  let redisServer: TestServer;
  let natsServer: TestServer;
  let redis: RedisClient;
  let bus: Bus;
  let store: ConfigStore;
  let started: ConfigWatcher[] = [];
  let seq = 0;

  const POOLS_A = { topics: { 'job.echo': ['default'] }, pools: { default: { requires: [] } } };
  const TIMEOUTS_A = { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300, scan_interval_seconds: 30 } };

  function make(o: { pollIntervalMs: number; sections: Record<string, SectionSetter>; service?: string; instance?: string; bootstrap?: BootstrapFile[] }) {
    seq++;
    const registry = new Registry();
    const cap: CapturedLogger = capturingLogger(o.instance ?? `i${seq}`);
    const service = o.service ?? `svc${seq}`;
    const instanceId = o.instance ?? `i${seq}`;
    const w = createConfigWatcher({ store, bus, logger: cap.logger, registry, service, instanceId, pollIntervalMs: o.pollIntervalMs, sections: o.sections, bootstrap: o.bootstrap });
    started.push(w);
    return { w, registry, cap, service, instanceId };
  }

  const docHash = async (section: string) => sectionHash((await store.get('system', 'default')).data, section);

  beforeAll(async () => {
    [redisServer, natsServer] = await Promise.all([startRedis(), startNats()]);
    redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
    bus = await connectBus({ servers: [natsServer.url], name: 'config-test', logger: capturingLogger('bus').logger });
    store = createConfigStore(redis);
  });
  beforeEach(async () => {
    await store.put('system', 'default', { pools: POOLS_A, timeouts: TIMEOUTS_A });
  });
  afterEach(async () => {
    await Promise.all(started.map((w) => w.stop()));
    started = [];
  });
  afterAll(async () => {
    await bus.close();
    await closeRedis(redis);
    await Promise.all([redisServer.stop(), natsServer.stop()]);
  });

  it('startup load applies every section; a notification applies only the changed section within 1 s', async () => {
    const pools = recorder();
    const timeouts = recorder();
    const { w, registry, cap, service, instanceId } = make({ pollIntervalMs: 60_000, sections: { pools: pools.setter, timeouts: timeouts.setter } });
    await w.start();
    await w.readyAfterFirstLoad;
    expect(w.ready).toBe(true);
    expect(pools.calls).toEqual([{ value: POOLS_A, hash: await docHash('pools') }]);
    expect(timeouts.calls).toEqual([{ value: TIMEOUTS_A, hash: await docHash('timeouts') }]);
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'startup' })).toBe(1);
    const oldTimeoutsHash = await docHash('timeouts');

    const { revision } = await store.mergePatch('system', 'default', { timeouts: { reconciler: { dispatch_timeout_seconds: 60 } } });
    const t0 = performance.now();
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    // the poll is 60 s away and counted 0 below: the notification applied it (5 s: D33's bound,
    // not 1 s, which a loaded machine's NATS delivery, Redis read and setter could exceed)
    await waitFor(() => timeouts.calls.length === 2, 5_000, { message: 'timeouts applied after notification' });
    expect(performance.now() - t0).toBeLessThan(5_000);
    const newTimeoutsHash = await docHash('timeouts');
    expect(timeouts.calls[1]).toEqual({ value: { reconciler: { ...TIMEOUTS_A.reconciler, dispatch_timeout_seconds: 60 } }, hash: newTimeoutsHash });
    expect(pools.calls).toHaveLength(1);
    expect(cap.count('config change notification received, reloading')).toBe(1);

    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'pools' })).toBe(1);
    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'timeouts' })).toBe(2);
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'poll' })).toBe(0);
    const info = await metricLabels(registry, 'cordum_config_applied_info');
    expect(info).toContainEqual({ section: 'timeouts', hash: newTimeoutsHash });
    expect(info).not.toContainEqual({ section: 'timeouts', hash: oldTimeoutsHash });
    expect(info.filter((l) => l['section'] === 'timeouts')).toHaveLength(1);

    // The replica's applied report (D33): contract key, hashes, TTL 3 × poll interval.
    const key = `cordum:config:applied:${service}:${instanceId}`;
    await waitFor(async () => (JSON.parse((await redis.get(key)) ?? '{}') as { revision?: number }).revision === revision, 5_000);
    const rep = JSON.parse((await redis.get(key))!) as Record<string, unknown>;
    expect(rep).toMatchObject({ service, instance_id: instanceId, revision, hashes: { pools: await docHash('pools'), timeouts: newTimeoutsHash }, checked: true });
    expect(Number.isNaN(Date.parse(rep['reported_at'] as string))).toBe(false);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(170_000);
    expect(pttl).toBeLessThanOrEqual(180_000);
  });

  it('publishConfigChanged sends a SystemAlert BusPacket carrying scope, scope_id and revision', async () => {
    const got = new Latch<Uint8Array>();
    const sub = bus.subscribe(subjects.configChanged, (data) => got.open(data));
    try {
      await bus.flush();
      await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision: 42 });
      expect(decodeConfigChanged(await got.wait(2000))).toEqual({ scope: 'system', scopeId: 'default', revision: 42 });
    } finally {
      sub.unsubscribe();
    }
  });

  it('a no-op write (same data, new revision) applies nothing', async () => {
    const pools = recorder();
    const timeouts = recorder();
    const { w, registry } = make({ pollIntervalMs: 60_000, sections: { pools: pools.setter, timeouts: timeouts.setter } });
    await w.start();
    const { revision } = await store.put('system', 'default', { timeouts: TIMEOUTS_A, pools: POOLS_A });
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    await waitFor(() => w.revision === revision, 2000, { message: 'reload saw the new revision' });
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' })).toBe(1);
    expect(pools.calls).toHaveLength(1);
    expect(timeouts.calls).toHaveLength(1);
    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'pools' })).toBe(1);
    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'timeouts' })).toBe(1);
  });

  it('a burst of 50 notifications coalesces into at most 2 reloads; stop() is idempotent and final', async () => {
    const pools = recorder();
    const { w, registry, cap } = make({ pollIntervalMs: 60_000, sections: { pools: pools.setter } });
    await w.start();
    // Hold the first reload inside the setter so the whole burst arrives while it is in flight.
    pools.gate = new Latch();
    const { revision } = await store.mergePatch('system', 'default', { pools: { topics: { 'job.burst': ['b'] } } });
    const bytes: Uint8Array[] = [];
    const grab = bus.subscribe(subjects.configChanged, (d) => bytes.push(d));
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    await waitFor(() => bytes.length === 1, 2000);
    grab.unsubscribe();
    for (let i = 0; i < 49; i++) bus.publishCore(subjects.configChanged, bytes[0]!);
    await bus.flush();
    await waitFor(() => cap.count('config change notification received, reloading') === 50, 3000, { message: 'all 50 notifications delivered' });
    pools.gate.open();
    await waitFor(async () => (await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' })) >= 2, 3000);
    await w.reload('poll'); // resolves once nothing is in flight or queued
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' })).toBe(2);
    expect(pools.calls.at(-1)?.hash).toBe(await docHash('pools'));
    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'pools' })).toBe(2);

    await Promise.all([w.stop(), w.stop()]);
    await w.stop();
    const before = await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' });
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    await bus.flush();
    await w.reload('notification');
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' })).toBe(before);
  });

  it('a LOST notification (write without publish) is applied by the poll within one interval', async () => {
    // 2 s, so that the slack for a loaded machine (1.5 s) still tells one interval from two
    const pollIntervalMs = 2_000;
    const pools = recorder();
    const { w, registry } = make({ pollIntervalMs, sections: { pools: pools.setter } });
    await w.start();
    await store.mergePatch('system', 'default', { pools: { topics: { 'job.lost': ['l'] } } });
    const t0 = performance.now();
    await waitFor(() => pools.calls.length === 2, 3 * pollIntervalMs, { message: 'poll applied the change' });
    expect(performance.now() - t0).toBeLessThan(pollIntervalMs + 1_500);
    expect(pools.calls[1]!.hash).toBe(await docHash('pools'));
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'notification' })).toBe(0);
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'poll' })).toBeGreaterThanOrEqual(1);
  });

  it('a throwing setter keeps the previous hash, logs, and is retried on the next reload', async () => {
    const timeouts = recorder();
    const { w, registry, cap } = make({ pollIntervalMs: 300, sections: { timeouts: timeouts.setter } });
    await w.start();
    const oldHash = await docHash('timeouts');
    // Armed before the write: a poll may run between the write and the next line.
    const newHash = hashValue({ reconciler: { ...TIMEOUTS_A.reconciler, running_timeout_seconds: 999 } });
    timeouts.failOnceFor = newHash;
    await store.mergePatch('system', 'default', { timeouts: { reconciler: { running_timeout_seconds: 999 } } });
    expect(await docHash('timeouts')).toBe(newHash);
    await waitFor(() => cap.count('config section apply failed, will retry on next reload') === 1, 3000);
    expect(w.appliedHashes()).toEqual({ timeouts: oldHash });
    await waitFor(() => w.appliedHashes()['timeouts'] === newHash, 3000, { message: 'retried on a later reload' });
    expect(timeouts.calls.filter((c) => c.hash === newHash)).toHaveLength(2);
    expect(await metricValue(registry, 'cordum_config_applies_total', { section: 'timeouts' })).toBe(2);
    const info = await metricLabels(registry, 'cordum_config_applied_info');
    expect(info).toEqual([{ section: 'timeouts', hash: newHash }]);
  });

  it('a setter failing at startup keeps the replica not ready and NOT_CHECKED until a poll succeeds', async () => {
    const pools = recorder();
    pools.failOnceFor = hashValue(POOLS_A);
    const { w, service, instanceId } = make({ pollIntervalMs: 300, sections: { pools: pools.setter } });
    await w.start();
    expect(w.ready).toBe(false);
    const mine = async () => (await configStatus(store, redis)).replicas.find((r) => r.service === service && r.instance_id === instanceId);
    expect((await mine())?.status).toBe('NOT_CHECKED');
    await w.readyAfterFirstLoad;
    expect(w.ready).toBe(true);
    expect(pools.calls).toHaveLength(2);
    await waitFor(async () => (await mine())?.status === 'IN_SYNC', 2000);
  });

  it('a failed first load is retried on a backoff from 1 s, not only at the next poll: ready about a second later with a 60 s poll', async () => {
    const pools = recorder();
    pools.failOnceFor = hashValue(POOLS_A);
    const { w, registry } = make({ pollIntervalMs: 60_000, sections: { pools: pools.setter } });
    await w.start();
    expect(w.ready).toBe(false);
    await waitFor(() => w.ready, 3_000, { message: 'ready after the first retry, long before the 60 s poll' });
    expect(pools.calls).toHaveLength(2);
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'retry' })).toBe(1);
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'poll' })).toBe(0);
  });

  it('the retries back off (1 s, 2 s, …) while the first load keeps failing, and stop with the watcher', async () => {
    let failing = true;
    let calls = 0;
    const { w, registry } = make({
      pollIntervalMs: 60_000,
      sections: {
        pools: async () => {
          calls++;
          if (failing) throw new Error('refused');
        },
      },
    });
    await w.start();
    await waitFor(() => calls === 3, 5_000, { message: 'startup, then retries after 1 s and 2 s' });
    failing = false;
    await waitFor(() => w.ready, 6_000, { message: 'ready at the retry 4 s later' });
    expect(await metricValue(registry, 'cordum_config_reloads_total', { trigger: 'retry' })).toBe(3);
    await w.stop();
    expect(calls).toBe(4);
  });

  it('reports NOT_CHECKED until the first successful load, then IN_SYNC', async () => {
    const pools = recorder();
    pools.gate = new Latch();
    const { w, service, instanceId } = make({ pollIntervalMs: 60_000, sections: { pools: pools.setter } });
    const starting = w.start();
    const mine = async () => (await configStatus(store, redis)).replicas.find((r) => r.service === service && r.instance_id === instanceId);
    await waitFor(async () => (await mine())?.status === 'NOT_CHECKED', 2000);
    expect(w.ready).toBe(false);
    pools.gate.open();
    await starting;
    expect(w.ready).toBe(true);
    expect(await mine()).toMatchObject({ status: 'IN_SYNC', hashes: { pools: await docHash('pools') } });
  });

  it('three replicas converge (IN_SYNC, equal hashes); a stopped one is DRIFTED after a change, then disappears', async () => {
    const pollIntervalMs = 500;
    const service = 'sched-conv';
    const replicas = ['r1', 'r2', 'r3'].map((instance) => {
      const sections = { pools: recorder(), timeouts: recorder(), scheduler: recorder() };
      const m = make({ pollIntervalMs, service, instance, sections: { pools: sections.pools.setter, timeouts: sections.timeouts.setter, scheduler: sections.scheduler.setter } });
      return { ...m, sections };
    });
    await Promise.all(replicas.map((r) => r.w.start()));

    const { revision } = await store.mergePatch('system', 'default', { scheduler: { input_fail_mode: 'closed' }, pools: { topics: { 'job.conv': ['c'] } } });
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision });
    const mine = async () => (await configStatus(store, redis)).replicas.filter((r) => r.service === service);
    await waitFor(async () => {
      const rs = await mine();
      return rs.length === 3 && rs.every((r) => r.status === 'IN_SYNC' && r.revision === revision);
    }, 3000, { message: 'three replicas IN_SYNC' });
    const status = await configStatus(store, redis);
    const rs = status.replicas.filter((r) => r.service === service);
    expect(rs.map((r) => r.instance_id)).toEqual(['r1', 'r2', 'r3']);
    const { pools, timeouts, scheduler } = status.document.hashes;
    for (const r of rs) expect(r.hashes).toEqual({ pools, timeouts, scheduler });
    expect(status.document).toMatchObject({ scope: 'system', scope_id: 'default', revision });

    // r3 goes away without removing its report (a crash: the report its clean stop deletes is put
    // back as the crash leaves it); a change lands meanwhile.
    const r3 = replicas[2]!;
    const r3Key = store.keys.applied(service, 'r3');
    const [r3Report, r3Ttl] = await Promise.all([redis.get(r3Key), redis.pttl(r3Key)]);
    await r3.w.stop();
    await writeAppliedReport(redis, r3Key, JSON.parse(r3Report!) as AppliedReport, r3Ttl, store.keys.appliedIndex());
    const change = await store.mergePatch('system', 'default', { scheduler: { output_fail_mode: 'closed' } });
    await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision: change.revision });
    const drifted = (await mine()).find((r) => r.instance_id === 'r3');
    expect(drifted?.status).toBe('DRIFTED');
    expect(drifted?.hashes['scheduler']).toBe(scheduler);
    expect(r3.sections.scheduler.calls).toHaveLength(2);

    await waitFor(async () => {
      const now = await mine();
      return now.length === 2 && now.every((r) => r.status === 'IN_SYNC' && r.revision === change.revision);
    }, 3 * 3 * pollIntervalMs, { message: 'r3 report expired, r1/r2 IN_SYNC' });
    for (const r of replicas.slice(0, 2)) expect(r.sections.scheduler.calls).toHaveLength(3);
  });

  it('a cleanly stopped replica leaves the status view at once (its report is deleted), not DRIFTED until it expires', async () => {
    const service = 'sched-clean-stop';
    const a = make({ pollIntervalMs: 60_000, service, instance: 'a', sections: { scheduler: recorder().setter } });
    const b = make({ pollIntervalMs: 60_000, service, instance: 'b', sections: { scheduler: recorder().setter } });
    await Promise.all([a.w.start(), b.w.start()]);
    const mine = async () => (await configStatus(store, redis)).replicas.filter((r) => r.service === service).map((r) => r.instance_id);
    expect(await mine()).toEqual(['a', 'b']);
    await b.w.stop();
    expect(await redis.exists(store.keys.applied(service, 'b'))).toBe(0);
    expect(await redis.zscore(store.keys.appliedIndex(), store.keys.applied(service, 'b'))).toBeNull();
    expect(await mine()).toEqual(['a']);
  });

  it('a stop that comes while the watcher is starting leaves no report and no poll timer behind', async () => {
    const service = 'sched-stop-while-starting';
    const stopped = make({ pollIntervalMs: 20, service, instance: 'early', sections: { scheduler: recorder().setter } });
    const running = make({ pollIntervalMs: 20, service, instance: 'witness', sections: { scheduler: recorder().setter } });
    await running.w.start();
    const starting = stopped.w.start();
    await stopped.w.stop();
    await starting;
    expect(await redis.exists(store.keys.applied(service, 'early'))).toBe(0);
    // The witness polls on the same interval: once it has polled five times, a timer left by the
    // stopped watcher would have fired too.
    await waitFor(async () => (await metricValue(running.registry, 'cordum_config_reloads_total', { trigger: 'poll' })) >= 5, 5_000, { message: 'witness polled' });
    expect(await metricValue(stopped.registry, 'cordum_config_reloads_total', { trigger: 'poll' })).toBe(0);
    expect(await redis.exists(store.keys.applied(service, 'early'))).toBe(0);
  });

  it('bootstrap files are merged before the first load; the merge notifies the other replicas', async () => {
    const other = recorder();
    const peer = make({ pollIntervalMs: 60_000, sections: { timeouts: other.setter } });
    await peer.w.start();
    const fileTimeouts = { reconciler: { dispatch_timeout_seconds: 11, running_timeout_seconds: 301, scan_interval_seconds: 0.25 } };
    const bootstrap = [{ section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: `# file\nreconciler:\n  dispatch_timeout_seconds: 11\n  running_timeout_seconds: 301\n  scan_interval_seconds: 0.25\n`, source: 'timeouts.yaml' }];
    const mine = recorder();
    const { w, cap } = make({ pollIntervalMs: 60_000, sections: { timeouts: mine.setter }, bootstrap });
    await w.start();
    expect(w.ready).toBe(true);
    // The first (and only) apply already sees the file: no intermediate apply of the old section.
    expect(mine.calls).toEqual([{ value: fileTimeouts, hash: hashValue(fileTimeouts) }]);
    const doc = await store.get('system', 'default');
    expect(doc.meta['_timeoutsFileHash']).toBe(hashValue(fileTimeouts));
    expect(cap.count('config bootstrap file merged')).toBe(1);
    await waitFor(() => other.calls.length === 2, 2000, { message: 'peer applied the merged file after the notification' });
    expect(other.calls[1]!.hash).toBe(hashValue(fileTimeouts));

    // A restart with the same file after a live edit: nothing written, the edit stays applied.
    await store.mergePatch('system', 'default', { timeouts: { reconciler: { dispatch_timeout_seconds: 12 } } });
    const again = recorder();
    const restarted = make({ pollIntervalMs: 60_000, sections: { timeouts: again.setter }, bootstrap });
    const rev = (await store.get('system', 'default')).revision;
    await restarted.w.start();
    expect((await store.get('system', 'default')).revision).toBe(rev);
    expect((again.calls[0]!.value as typeof fileTimeouts).reconciler.dispatch_timeout_seconds).toBe(12);
    expect(restarted.cap.count('config bootstrap file unchanged since its last merge, live config kept')).toBe(1);
  });

  it('a document that lost its bootstrap merge (Redis came back empty) gets the files merged again before anything is applied', async () => {
    const fileTimeouts = { reconciler: { dispatch_timeout_seconds: 13, running_timeout_seconds: 303, scan_interval_seconds: 3 } };
    const bootstrap = [{ section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: fileTimeouts, source: 'timeouts.yaml' }];
    await store.mergePatch('system', 'default', { pools: POOLS_A });
    const timeouts = recorder();
    const pools = recorder();
    const { w, cap } = make({ pollIntervalMs: 100, sections: { timeouts: timeouts.setter, pools: pools.setter }, bootstrap });
    await w.start();
    expect(timeouts.calls).toEqual([{ value: fileTimeouts, hash: hashValue(fileTimeouts) }]);
    expect(pools.calls).toEqual([{ value: POOLS_A, hash: hashValue(POOLS_A) }]);

    // What a Redis restart without persistence leaves: no document at all. A poll reads it:
    // the section no file provides is gone (applied as absent), the file's section is merged
    // again first and so never applied as absent.
    await redis.del('cfg:system:default');
    await waitFor(() => pools.calls.length === 2, 3000, { message: 'a poll applied the emptied document' });
    expect(pools.calls[1]).toEqual({ value: undefined, hash: null });
    expect(timeouts.calls).toHaveLength(1);
    const doc = await store.get('system', 'default');
    expect({ data: doc.data, hash: doc.meta['_timeoutsFileHash'] }).toEqual({ data: { timeouts: fileTimeouts }, hash: hashValue(fileTimeouts) });
    expect(w.revision).toBe(doc.revision);
    expect(cap.count('config document has lost its bootstrap merge (Redis emptied or the key deleted), merging the files again')).toBe(1);
  });

  it('a corrupt section keeps the last good config, shows DRIFTED and logs one error over many polls', async () => {
    const timeouts = recorder();
    const pools = recorder();
    const { w, cap, service, instanceId } = make({
      pollIntervalMs: 100,
      sections: {
        timeouts: (v, h) => {
          if (typeof v === 'object' && v !== null && 'broken' in v) throw new Error('section does not parse');
          return timeouts.setter(v, h);
        },
        pools: pools.setter,
      },
    });
    await w.start();
    const good = await docHash('timeouts');
    const raw = JSON.parse((await redis.get('cfg:system:default'))!) as { data: Record<string, unknown>; revision: number };
    raw.data['timeouts'] = { broken: true };
    raw.revision += 1;
    await redis.set('cfg:system:default', JSON.stringify(raw));
    // The reload counter ticks when a poll starts, the log line when it has finished: wait on the lines.
    await waitFor(() => cap.count('config section still rejected, keeping applied config') >= 4, 3000, { message: 'four more polls after the corruption' });
    expect(cap.count('config section apply failed, will retry on next reload')).toBe(1);
    expect(w.appliedHashes()['timeouts']).toBe(good);
    const st = (await configStatus(store, redis)).replicas.find((r) => r.service === service && r.instance_id === instanceId);
    expect(st).toMatchObject({ status: 'DRIFTED', hashes: { timeouts: good } });

    // A whole document that is not JSON: one error too, and recovery is logged.
    await redis.set('cfg:system:default', '{not json');
    await waitFor(() => cap.count('config reload failed, keeping applied config') >= 4, 3000, { message: 'four polls of the unparseable document' });
    const errors = (msg: string) => cap.lines.filter((l) => l.msg === msg && l.level === 'error').length;
    expect(errors('config reload failed, keeping applied config')).toBe(1);

    // The operator's fix: a writer refuses to touch a corrupt document (config_corrupt), so delete it first.
    await expect(store.put('system', 'default', { pools: POOLS_A, timeouts: TIMEOUTS_A })).rejects.toMatchObject({ code: 'config_corrupt' });
    await redis.del('cfg:system:default');
    await store.put('system', 'default', { pools: POOLS_A, timeouts: TIMEOUTS_A });
    await waitFor(async () => (await configStatus(store, redis)).replicas.find((r) => r.instance_id === instanceId)?.status === 'IN_SYNC', 3000);
    expect(cap.count('config readable again')).toBe(1);
    expect(cap.count('config section apply failed, will retry on next reload')).toBe(1);
  });
});
