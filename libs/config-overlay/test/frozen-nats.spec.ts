// NATS frozen (SIGSTOP: TCP up, no PONG) or black-holed: a flush waits until nats.js calls the
// connection stale (20-30 s). publishConfigChanged flushed without a deadline, and the watcher
// awaited it after a bootstrap re-merge, so every reload queued behind it waited too: a change
// was applied 29 s after its write with a 0.5 s poll, though the poll is the fallback for NATS.
// This file has its own nats-server, frozen by the tests.
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { connectBus, type Bus } from '@cordum/bus';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { CONFIG_NOTIFY_FLUSH_BUDGET_MS, createConfigStore, createConfigWatcher, publishConfigChanged, type ConfigStore, type ConfigWatcher } from '../src';
import { capturingLogger } from './helpers';

const POOLS = { topics: { 'job.echo': ['default'] }, pools: { default: { requires: [] } } };

describe('config notifications with NATS frozen', () => {
  let rs: TestServer;
  let ns: TestServer;
  let redis: RedisClient;
  let bus: Bus;
  let store: ConfigStore;
  let frozen = false;
  let watchers: ConfigWatcher[] = [];
  const freeze = async (): Promise<void> => {
    frozen = true;
    await ns.process.freeze();
  };
  const thaw = (): void => {
    if (frozen) ns.process.kill('SIGCONT');
    frozen = false;
  };

  beforeAll(async () => {
    [rs, ns] = await Promise.all([startRedis(), startNats()]);
    redis = createRedis({ url: rs.url, clusterAddresses: [], poolSize: 2, minIdleConns: 0 });
    bus = await connectBus({ servers: [ns.url], name: 'frozen-nats', logger: capturingLogger('bus').logger });
    store = createConfigStore(redis);
  });
  afterEach(async () => {
    thaw();
    await Promise.all(watchers.map((w) => w.stop()));
    watchers = [];
    // Back to a connection that answers before the next test (nats.js may have called it stale).
    await waitFor(() => bus.flush().then(() => true), 20_000, { message: 'NATS answers again' });
  }, 30_000);
  afterAll(async () => {
    thaw();
    await bus.close().catch(() => undefined);
    await closeRedis(redis);
    await Promise.all([rs.stop(), ns.stop()]);
  });

  it('publishConfigChanged gives up after its budget instead of waiting for nats.js to call the connection stale', async () => {
    await freeze();
    const t0 = performance.now();
    await expect(publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision: 1 })).rejects.toThrow(`NATS did not confirm within ${CONFIG_NOTIFY_FLUSH_BUDGET_MS} ms`);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(CONFIG_NOTIFY_FLUSH_BUDGET_MS - 50);
    expect(ms).toBeLessThan(CONFIG_NOTIFY_FLUSH_BUDGET_MS + 1_000);
  }, 30_000);

  it('a bootstrap re-merge while NATS is frozen does not hold the reloads: a later change applies within a few polls', async () => {
    await redis.del('cfg:system:default');
    const applied: { t: number; v: unknown }[] = [];
    const cap = capturingLogger('w');
    const w = createConfigWatcher({
      store,
      bus,
      logger: cap.logger,
      registry: new Registry(),
      service: 'scheduler',
      instanceId: 'i1',
      pollIntervalMs: 500,
      sections: { pools: () => undefined, timeouts: (v) => void applied.push({ t: performance.now(), v }) },
      bootstrap: [{ section: 'pools', fileHashMetaKey: '_poolsFileHash', content: POOLS }],
    });
    watchers.push(w);
    await w.start();
    await freeze();
    // Redis restarted empty (or the key deleted): the next poll merges the file again and notifies.
    await redis.del('cfg:system:default');
    await waitFor(async () => (await store.get('system', 'default')).meta['_poolsFileHash'] !== undefined, 3_000, { message: 'the file merged again' });
    // An operator's change while NATS is frozen (its notification is lost: the poll must carry it).
    await store.mergePatch('system', 'default', { timeouts: { reconciler: { dispatch_timeout_seconds: 77 } } });
    const tWrite = performance.now();
    const hit = await waitFor(() => applied.find((a) => String(JSON.stringify(a.v)).includes('77')), 25_000, { message: 'timeouts 77 applied', intervalMs: 50 });
    // Was 29 s (until nats.js gave up on the connection). Three poll intervals and some slack.
    expect(hit.t - tWrite).toBeLessThan(2_000);
    expect(cap.count('config document has lost its bootstrap merge (Redis emptied or the key deleted), merging the files again')).toBe(1);
  }, 60_000);

  it('a watcher starting while NATS is frozen starts on the poll within the budget', async () => {
    await store.put('system', 'default', { pools: POOLS });
    await freeze();
    const cap = capturingLogger('w2');
    const w = createConfigWatcher({ store, bus, logger: cap.logger, registry: new Registry(), service: 'svc', instanceId: 'i2', pollIntervalMs: 500, sections: { pools: () => undefined } });
    watchers.push(w);
    const t0 = performance.now();
    await w.start();
    expect(performance.now() - t0).toBeLessThan(CONFIG_NOTIFY_FLUSH_BUDGET_MS + 1_000);
    expect(w.ready).toBe(true);
    expect(cap.count('config change subscription not confirmed by NATS; relying on the poll until notifications arrive')).toBe(1);
  }, 30_000);
});
