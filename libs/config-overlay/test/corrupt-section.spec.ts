// A stored document that is valid JSON but has no canonical form: a number JSON.parse reads as
// Infinity (`1e999`, a hand edit with redis-cli SET, which docs/config.md tells operators they may
// use to restore the document), or nesting deeper than anything can recurse into. Before, the
// section hash threw outside the watcher's per-section try: every reload rejected, the poll and
// notification callers left the rejection unhandled (service-kit exits 1 on one: every replica,
// at every poll, and again at every start), the sections after the bad one were not applied, and
// GET /config/status threw.
import { Registry } from 'prom-client';
import { connectBus, type Bus } from '@cordum/bus';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import {
  CORRUPT_SECTION_PREFIX,
  MAX_CONFIG_DEPTH,
  NotJsonError,
  canonicalJson,
  configStatus,
  createConfigStore,
  createConfigWatcher,
  hashValue,
  sectionHash,
  type ConfigStore,
  type ConfigWatcher,
} from '../src';
import { capturingLogger, type CapturedLogger } from './helpers';

const KEY = 'cfg:system:default';
const POOLS = { topics: { 'job.echo': ['default'] }, pools: { default: { requires: [] } } };
const RATE = { rps: 10, burst: 20 };
const TIMEOUTS = { reconciler: { dispatch_timeout_seconds: 60 } };

/** The stored document as a hand edit writes it: raw text, `data` given as JSON text. */
function rawDoc(dataText: string, revision: number): string {
  return `{"scope":"system","scope_id":"default","revision":${revision},"updated_at":null,"meta":{},"data":${dataText}}`;
}

function nested(levels: number, leaf = '1'): string {
  return '['.repeat(levels) + leaf + ']'.repeat(levels);
}

describe('a stored section with no canonical form (non-finite number, absurd nesting)', () => {
  let rs: TestServer;
  let ns: TestServer;
  let redis: RedisClient;
  let bus: Bus;
  let store: ConfigStore;
  let watchers: ConfigWatcher[] = [];
  let unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  let seq = 0;

  function watch(pollIntervalMs = 150) {
    const applied: Record<string, unknown[]> = { pools: [], rate_limits: [], timeouts: [] };
    const cap: CapturedLogger = capturingLogger(`w${++seq}`);
    const record = (section: string) => (v: unknown) => void applied[section]!.push(v);
    const w = createConfigWatcher({
      store,
      bus,
      logger: cap.logger,
      registry: new Registry(),
      service: 'svc',
      instanceId: `i${seq}`,
      pollIntervalMs,
      // Sorted: pools, rate_limits (the bad one), timeouts (after it: it was never applied).
      sections: { pools: record('pools'), rate_limits: record('rate_limits'), timeouts: record('timeouts') },
    });
    watchers.push(w);
    return { w, applied, cap, instanceId: `i${seq}` };
  }
  const errorLines = (cap: CapturedLogger, msg: string) => cap.lines.filter((l) => l.msg === msg && l.level === 'error');

  beforeAll(async () => {
    [rs, ns] = await Promise.all([startRedis(), startNats()]);
    redis = createRedis({ url: rs.url, clusterAddresses: [], poolSize: 2, minIdleConns: 0 });
    bus = await connectBus({ servers: [ns.url], name: 'corrupt-section', logger: capturingLogger('bus').logger });
    store = createConfigStore(redis);
    process.on('unhandledRejection', onUnhandled);
  });
  beforeEach(async () => {
    unhandled = [];
    await redis.del(KEY);
    await store.put('system', 'default', { pools: POOLS, rate_limits: RATE, timeouts: TIMEOUTS });
  });
  afterEach(async () => {
    await Promise.all(watchers.map((w) => w.stop()));
    watchers = [];
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await bus.close();
    await closeRedis(redis);
    await Promise.all([rs.stop(), ns.stop()]);
  });

  it('canonicalJson and sectionHash name the field: a non-finite number, nesting past the limit (no RangeError)', () => {
    expect(() => canonicalJson({ a: [1, Infinity] })).toThrow(NotJsonError);
    expect(() => canonicalJson({ a: [1, Infinity] })).toThrow('a.1 is Infinity, not a finite number');
    expect(() => sectionHash({ rate_limits: { rps: 1, burst: -Infinity } }, 'rate_limits')).toThrow(
      expect.objectContaining({ code: 'config_corrupt', message: expect.stringContaining('stored section rate_limits is unreadable: rate_limits.burst is -Infinity, not a finite number') }),
    );
    const deep = JSON.parse(nested(100_000)) as unknown;
    expect(() => canonicalJson(deep)).toThrow(`nests deeper than ${MAX_CONFIG_DEPTH} levels`);
    expect(() => sectionHash({ x: deep }, 'x')).toThrow(expect.objectContaining({ code: 'config_corrupt' }));
    // Up to the limit it hashes as before.
    expect(hashValue(JSON.parse(nested(MAX_CONFIG_DEPTH)))).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a running watcher refuses that section alone: the others apply, DRIFTED, one error line, no unhandled rejection', async () => {
    const { w, applied, cap, instanceId } = watch();
    await w.start();
    expect(w.ready).toBe(true);
    const goodRate = sectionHash({ rate_limits: RATE }, 'rate_limits');

    // The hand edit: rate_limits.burst 1e999, and timeouts changed in the same SET.
    await redis.set(KEY, rawDoc('{"pools":' + JSON.stringify(POOLS) + ',"rate_limits":{"rps":20,"burst":1e999},"timeouts":{"reconciler":{"dispatch_timeout_seconds":90}}}', 7));
    await waitFor(() => applied['timeouts']!.length === 2, 3_000, { message: 'timeouts (after the bad section) applied' });
    expect(applied['timeouts']![1]).toEqual({ reconciler: { dispatch_timeout_seconds: 90 } });
    await waitFor(() => cap.count('config section still rejected, keeping applied config') >= 3, 3_000, { message: 'three more polls' });

    expect(applied['rate_limits']).toEqual([RATE]); // the setter never saw Infinity
    expect(w.appliedHashes()['rate_limits']).toBe(goodRate);
    expect(w.revision).toBe(7);
    const errors = errorLines(cap, 'config section apply failed, will retry on next reload');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ section: 'rate_limits', revision: 7 });
    expect(JSON.stringify(errors[0])).toContain('rate_limits.burst is Infinity, not a finite number');

    // The status view answers: the section marked, the replica DRIFTED.
    const st = await configStatus(store);
    expect(st.document.revision).toBe(7);
    expect(st.document.hashes['rate_limits']).toMatch(new RegExp(`^${CORRUPT_SECTION_PREFIX}.*rate_limits\\.burst is Infinity`));
    expect(st.document.hashes['timeouts']).toBe(hashValue({ reconciler: { dispatch_timeout_seconds: 90 } }));
    expect(st.replicas.find((r) => r.instance_id === instanceId)).toMatchObject({ status: 'DRIFTED', hashes: { rate_limits: goodRate } });

    // A write that would carry the value on (a bootstrap merge of another section, unvalidated)
    // is refused rather than writing it as null; a fix of the field itself goes through.
    await expect(store.mergePatch('system', 'default', { pools: { pools: { gpu: { requires: [] } } } })).rejects.toMatchObject({
      code: 'config_invalid_data',
      errors: [{ path: 'rate_limits.burst', message: expect.stringContaining('is Infinity, not a finite number') }],
    });
    expect((await store.get('system', 'default')).revision).toBe(7);
    await store.mergePatch('system', 'default', { rate_limits: { burst: 30 } });
    await waitFor(() => applied['rate_limits']!.length === 2, 3_000, { message: 'the fixed section applied' });
    expect(applied['rate_limits']![1]).toEqual({ rps: 20, burst: 30 });
    await waitFor(async () => (await configStatus(store)).replicas.find((r) => r.instance_id === instanceId)?.status === 'IN_SYNC', 3_000);
    expect(unhandled).toEqual([]);
    await w.stop(); // resolves (it rejected with the reload)
  });

  it('a watcher starting beside it starts (not exit 1): the other sections apply, not ready and NOT_CHECKED until the section is fixed', async () => {
    await redis.set(KEY, rawDoc('{"pools":' + JSON.stringify(POOLS) + ',"rate_limits":{"rps":20,"burst":1e999},"timeouts":{"reconciler":{"dispatch_timeout_seconds":90}}}', 3));
    const { w, applied, cap, instanceId } = watch(60_000);
    await w.start(); // rejected before: the process's start failed
    expect(w.ready).toBe(false);
    expect(applied['pools']).toEqual([POOLS]);
    expect(applied['timeouts']).toEqual([{ reconciler: { dispatch_timeout_seconds: 90 } }]);
    expect(applied['rate_limits']).toEqual([]);
    expect(w.appliedHashes()).not.toHaveProperty('rate_limits');
    expect((await configStatus(store)).replicas.find((r) => r.instance_id === instanceId)?.status).toBe('NOT_CHECKED');
    // The fix is picked up by the retries (1 s, 2 s, …: P87), not only at the 60 s poll.
    await store.mergePatch('system', 'default', { rate_limits: { burst: 40 } });
    await w.readyAfterFirstLoad;
    expect(applied['rate_limits']).toEqual([{ rps: 20, burst: 40 }]);
    expect(errorLines(cap, 'config section apply failed, will retry on next reload')).toHaveLength(1);
    expect(unhandled).toEqual([]);
  });

  it('a bootstrap merge beside it is refused (it would write the value back as null) and retried: not ready, until the section is fixed', async () => {
    await redis.set(KEY, rawDoc('{"pools":' + JSON.stringify(POOLS) + ',"rate_limits":{"rps":20,"burst":1e999}}', 4));
    const cap = capturingLogger(`w${++seq}`);
    const file = { reconciler: { dispatch_timeout_seconds: 33 } };
    const w = createConfigWatcher({
      store,
      bus,
      logger: cap.logger,
      registry: new Registry(),
      service: 'svc',
      instanceId: `i${seq}`,
      pollIntervalMs: 60_000,
      sections: { timeouts: () => undefined },
      bootstrap: [{ section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: file, source: 'timeouts.yaml' }],
    });
    watchers.push(w);
    await w.start();
    expect(w.ready).toBe(false);
    const failed = errorLines(cap, 'config bootstrap merge failed, will retry on next reload');
    expect(failed).toHaveLength(1);
    expect(JSON.stringify(failed[0])).toContain('rate_limits.burst: is Infinity, not a finite number');
    expect((await store.get('system', 'default')).revision).toBe(4);
    await store.mergePatch('system', 'default', { rate_limits: { burst: 50 } });
    await w.readyAfterFirstLoad;
    expect((await store.get('system', 'default')).data).toEqual({ pools: POOLS, rate_limits: { rps: 20, burst: 50 }, timeouts: file });
    expect(unhandled).toEqual([]);
  });

  it('a document nested past the limit is config_corrupt as a whole, like one that is not JSON: the watcher keeps everything and runs on', async () => {
    const { w, applied, cap } = watch();
    await w.start();
    await redis.set(KEY, rawDoc(`{"pools":${JSON.stringify(POOLS)},"rate_limits":{"rps":5,"x":${nested(100_000)}}}`, 9));
    await expect(store.get('system', 'default')).rejects.toMatchObject({ code: 'config_corrupt', message: expect.stringContaining(`nests deeper than ${MAX_CONFIG_DEPTH} levels`) });
    await waitFor(() => cap.count('config reload failed, keeping applied config') >= 4, 3_000, { message: 'four polls of the deep document' });
    expect(errorLines(cap, 'config reload failed, keeping applied config')).toHaveLength(1);
    expect(applied['rate_limits']).toEqual([RATE]);
    // Writers refuse it too (Redis's cjson decodes no deeper): the fix is to replace it by hand.
    await expect(store.mergePatch('system', 'default', { rate_limits: { rps: 6 } })).rejects.toMatchObject({ code: 'config_corrupt' });
    // A section nested deep but within the limit still hashes and applies.
    await redis.set(KEY, rawDoc(`{"pools":${JSON.stringify(POOLS)},"rate_limits":{"rps":5,"x":${nested(MAX_CONFIG_DEPTH - 4)}}}`, 10));
    await waitFor(() => applied['rate_limits']!.length === 2, 3_000, { message: 'the deep but bounded section applied' });
    expect(unhandled).toEqual([]);
  });
});
