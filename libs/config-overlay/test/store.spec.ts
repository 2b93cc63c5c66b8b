import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { callsOf, commandCalls, repoRoot, startRedis, type TestServer } from '@cordum/testing';
import { CLOCK_SLACK_MS, configStatus, createConfigStore, hashValue, liveFileRules, mergeBootstrapFile, mergeBootstrapFiles, publishFileRules, REPORT_INDEX_SLACK_MS, writeAppliedReport, type RevisionConflictError, type ConfigStore } from '../src';

describe('ConfigStore (real Redis)', () => {
  let server: TestServer;
  let redis: RedisClient;
  let store: ConfigStore;
  let n = 0;
  const id = () => `t${++n}`;

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
    store = createConfigStore(redis);
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('a missing document reads as {data: {}, revision: 0, meta: {}}', async () => {
    const doc = await store.get('system', id());
    expect(doc).toMatchObject({ scope: 'system', data: {}, revision: 0, meta: {} });
  });

  it('put stores the contract document at cfg:<scope>:<id>, +1 per write, arrays and numbers intact', async () => {
    const sid = id();
    const data = { pools: { topics: { 'job.a': [] as string[] }, pools: {} }, big: 12345678901234, f: 0.1 };
    expect((await store.put('system', sid, data)).revision).toBe(1);
    expect((await store.put('system', sid, data)).revision).toBe(2);
    const raw = JSON.parse((await redis.get(`cfg:system:${sid}`))!) as Record<string, unknown>;
    expect(raw).toMatchObject({ scope: 'system', scope_id: sid, data, revision: 2, meta: {} });
    expect(Date.parse(raw['updated_at'] as string)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('CAS: two concurrent writers with the same expected revision, exactly one wins', async () => {
    const sid = id();
    await store.put('system', sid, { v: 0 });
    const results = await Promise.allSettled([
      store.put('system', sid, { v: 'a' }, { expectedRevision: 1 }),
      store.put('system', sid, { v: 'b' }, { expectedRevision: 1 }),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    const err = failed[0]!.reason as RevisionConflictError;
    expect(err.code).toBe('revision_conflict');
    expect(err.currentRevision).toBe(2);
    const doc = await store.get('system', sid);
    expect(doc.revision).toBe(2);
    expect(['a', 'b']).toContain(doc.data['v']);
  });

  it('20 concurrent mergePatch calls without a revision: revision 20 and no lost update', async () => {
    const sid = id();
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.mergePatch('system', sid, { counters: { [`k${i}`]: i } })));
    const doc = await store.get('system', sid);
    expect(doc.revision).toBe(20);
    expect(Object.keys(doc.data['counters'] as object)).toHaveLength(20);
  });

  it('mergePatch: null deletes; with a stale revision it is revision_conflict', async () => {
    const sid = id();
    await store.put('system', sid, { scheduler: { input_fail_mode: 'open', output_fail_mode: 'open' }, rate_limits: { rps: 1 } });
    const r = await store.mergePatch('system', sid, { scheduler: { input_fail_mode: 'closed', output_fail_mode: null }, rate_limits: null });
    expect(r.revision).toBe(2);
    expect((await store.get('system', sid)).data).toEqual({ scheduler: { input_fail_mode: 'closed' } });
    await expect(store.mergePatch('system', sid, { x: 1 }, { expectedRevision: 1 })).rejects.toMatchObject({ code: 'revision_conflict', currentRevision: 2 });
    expect((await store.mergePatch('system', sid, { x: 1 }, { expectedRevision: 2 })).revision).toBe(3);
  });

  it('meta is server-owned: data writes keep it, setMeta merges it', async () => {
    const sid = id();
    await store.setMeta('system', sid, { _poolsFileHash: 'abc' });
    await store.put('system', sid, { a: 1 });
    await store.mergePatch('system', sid, { b: 2 });
    await store.setMeta('system', sid, { _timeoutsFileHash: 'def' });
    const doc = await store.get('system', sid);
    expect(doc.meta).toEqual({ _poolsFileHash: 'abc', _timeoutsFileHash: 'def' });
    expect(doc.data).toEqual({ a: 1, b: 2 });
    expect(doc.revision).toBe(4);
  });

  it('validation and scope checks reject bad writes with stable codes and write nothing', async () => {
    const sid = id();
    await expect(store.put('system', sid, { timeouts: { reconciler: { dispatch_timeout_seconds: 'x' } } }, { validate: true })).rejects.toMatchObject({
      code: 'config_invalid_data',
      errors: [expect.objectContaining({ path: 'timeouts.reconciler.dispatch_timeout_seconds' })],
    });
    await expect(store.put('galaxy' as never, sid, {})).rejects.toMatchObject({ code: 'invalid_scope' });
    expect((await store.get('system', sid)).revision).toBe(0);
  });

  it('a corrupt stored document is config_corrupt for readers and writers', async () => {
    const sid = id();
    await redis.set(`cfg:system:${sid}`, 'not json');
    await expect(store.get('system', sid)).rejects.toMatchObject({ code: 'config_corrupt' });
    await expect(store.put('system', sid, {})).rejects.toMatchObject({ code: 'config_corrupt' });
  });

  it('effective merges system < org < team < workflow < step', async () => {
    const sid = id();
    await store.put('system', sid, { timeouts: { reconciler: { dispatch_timeout_seconds: 120, running_timeout_seconds: 300 } }, pools: { topics: { 'job.a': ['p1'] } } });
    await store.put('org', sid, { timeouts: { reconciler: { dispatch_timeout_seconds: 60 } } });
    await store.put('step', sid, { pools: { topics: { 'job.a': ['p9'] } }, timeouts: { reconciler: { running_timeout_seconds: null } } });
    const eff = await store.effective({ system: sid, org: sid, team: sid, step: sid });
    expect(eff.data).toEqual({ timeouts: { reconciler: { dispatch_timeout_seconds: 60 } }, pools: { topics: { 'job.a': ['p9'] } } });
    expect(eff.revisions).toEqual({ system: 1, org: 1, team: 0, step: 1 });
  });
});

describe('bootstrap merge (D35)', () => {
  let server: TestServer;
  let redis: RedisClient;
  let store: ConfigStore;
  const poolsFile = readFileSync(join(repoRoot, 'config/pools.yaml'), 'utf8');

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
    store = createConfigStore(redis);
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  const merge = (content: unknown) => mergeBootstrapFile(store, { section: 'pools', fileHashMetaKey: '_poolsFileHash', content });

  it('first run writes; same file writes nothing; live edit survives a restart; changed file replaces the section', async () => {
    await store.put('system', 'default', { scheduler: { input_fail_mode: 'open' } });
    const first = await merge(poolsFile);
    expect(first).toMatchObject({ written: true, revision: 2 });
    let doc = await store.get('system', 'default');
    expect(doc.data['pools']).toEqual({ topics: { 'job.echo': ['default'], 'job.default': ['default'] }, pools: { default: { requires: [] } } });
    expect(doc.data['scheduler']).toEqual({ input_fail_mode: 'open' });
    expect(doc.meta['_poolsFileHash']).toBe(hashValue(doc.data['pools']));

    // same file again (a restart): nothing written
    expect(await merge(poolsFile)).toMatchObject({ written: false, revision: 2 });
    expect((await store.get('system', 'default')).revision).toBe(2);

    // a live edit, then a restart with the same file (reformatted): the edit survives
    await store.mergePatch('system', 'default', { pools: { topics: { 'job.live': ['gpu'] } } });
    expect(await merge(`# comment only change\n${poolsFile.replace(/\n\s*\n/g, '\n')}`)).toMatchObject({ written: false, revision: 3 });
    doc = await store.get('system', 'default');
    expect(doc.revision).toBe(3);
    expect((doc.data['pools'] as { topics: Record<string, string[]> }).topics['job.live']).toEqual(['gpu']);

    // a changed file replaces the whole section and stores its hash
    const changed = { topics: { 'job.echo': ['echo-pool'] }, pools: { 'echo-pool': { requires: [] } } };
    expect(await merge(changed)).toMatchObject({ written: true, revision: 4, fileHash: hashValue(changed) });
    doc = await store.get('system', 'default');
    expect(doc.data['pools']).toEqual(changed);
    expect(doc.data['scheduler']).toEqual({ input_fail_mode: 'open' });
    expect(doc.meta['_poolsFileHash']).toBe(hashValue(changed));
  });

  it('replicas starting together merge a new file exactly once; an invalid file is rejected', async () => {
    const file = { topics: { 'job.x': ['px'] }, pools: { px: { requires: ['gpu'] } } };
    const before = (await store.get('system', 'default')).revision;
    const results = await Promise.all(Array.from({ length: 5 }, () => merge(file)));
    expect(results.filter((r) => r.written)).toHaveLength(1);
    expect((await store.get('system', 'default')).revision).toBe(before + 1);
    await expect(merge({ topics: { 'job.x': 'px' } })).rejects.toMatchObject({ code: 'config_invalid_data' });
    expect((await store.get('system', 'default')).revision).toBe(before + 1);
  });

  it('a file naming a key no section has is refused before anything is written, naming the file and the path (P66 check)', async () => {
    const before = await store.get('system', 'default');
    // `topic:` for `topics:` (YAML text, as the scheduler passes it) would have replaced the live routing with nothing.
    await expect(mergeBootstrapFile(store, { section: 'pools', fileHashMetaKey: '_poolsFileHash', content: 'topic:\n  job.echo: [default]\n', source: 'pools.yaml' })).rejects.toMatchObject({
      code: 'config_invalid_data',
      errors: [{ path: 'pools.topic', message: 'unknown field; pools takes topics, pools (in pools.yaml)' }],
    });
    const files = [
      { section: 'pools', fileHashMetaKey: '_poolsFileHash', content: { topics: { 'job.ok': ['p'] } }, source: 'pools.yaml' },
      { section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: { reconciler: { dispatch_timout_seconds: 5 } }, source: 'timeouts.yaml' },
    ];
    await expect(mergeBootstrapFiles(store, files)).rejects.toThrow(
      'invalid config: timeouts.reconciler.dispatch_timout_seconds: unknown field; timeouts.reconciler takes dispatch_timeout_seconds, running_timeout_seconds, scan_interval_seconds (in timeouts.yaml)',
    );
    const after = await store.get('system', 'default');
    expect(after.revision).toBe(before.revision);
    expect(after.data).toEqual(before.data);
  });

  it('mergeBootstrapFiles merges only the changed files, in one write, once across concurrent starters', async () => {
    const pools = { topics: { 'job.m': ['pm'] }, pools: { pm: { requires: [] } } };
    const timeouts = { reconciler: { dispatch_timeout_seconds: 7, running_timeout_seconds: 60, scan_interval_seconds: 0.5 } };
    const files = (p: unknown, t: unknown) => [
      { section: 'pools', fileHashMetaKey: '_poolsFileHash', content: p, source: 'pools.yaml' },
      { section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: t, source: 'timeouts.yaml' },
    ];
    const before = (await store.get('system', 'default')).revision;
    const results = await Promise.all(Array.from({ length: 4 }, () => mergeBootstrapFiles(store, files(pools, timeouts))));
    expect(results.filter((r) => r.written)).toHaveLength(1);
    let doc = await store.get('system', 'default');
    expect(doc.revision).toBe(before + 1);
    expect(doc.data['pools']).toEqual(pools);
    expect(doc.data['timeouts']).toEqual(timeouts);
    expect(doc.meta).toMatchObject({ _poolsFileHash: hashValue(pools), _timeoutsFileHash: hashValue(timeouts) });

    // live edit of timeouts; then a restart where only the pools file changed: timeouts edit kept
    await store.mergePatch('system', 'default', { timeouts: { reconciler: { dispatch_timeout_seconds: 99 } } });
    const pools2 = { topics: { 'job.m': ['pm', 'pn'] } };
    const r = await mergeBootstrapFiles(store, files(pools2, timeouts));
    expect(r).toMatchObject({ written: true, revision: before + 3 });
    expect(r.files.map((f) => [f.section, f.merged])).toEqual([['pools', true], ['timeouts', false]]);
    doc = await store.get('system', 'default');
    expect(doc.data['pools']).toEqual(pools2);
    expect((doc.data['timeouts'] as typeof timeouts).reconciler.dispatch_timeout_seconds).toBe(99);
    expect(await mergeBootstrapFiles(store, files(pools2, timeouts))).toMatchObject({ written: false, revision: before + 3 });
  });

  it('the status view reads the report index, not the keyspace: no SCAN however many keys Redis holds (P60)', async () => {
    const report = (instance: string) => ({ service: 'scheduler', instance_id: instance, revision: 0, hashes: {}, reported_at: new Date().toISOString(), checked: true });
    await writeAppliedReport(redis, store.keys.applied('scheduler', 'live-1'), report('live-1'), 60_000, store.keys.appliedIndex());
    await writeAppliedReport(redis, store.keys.applied('scheduler', 'live-2'), report('live-2'), 60_000, store.keys.appliedIndex());
    await writeAppliedReport(redis, store.keys.applied('scheduler', 'gone'), report('gone'), 1, store.keys.appliedIndex());
    const filler = redis.pipeline();
    for (let i = 0; i < 5_000; i++) filler.set(`job:meta:{filler-${i}}`, 'x');
    await filler.exec();
    await new Promise((r) => setTimeout(r, 5)); // 'gone' (1 ms) expires
    const before = callsOf(await commandCalls(redis), 'scan');
    const status = await configStatus(store, redis);
    expect(status.replicas.map((r) => r.instance_id)).toEqual(['live-1', 'live-2']);
    expect(callsOf(await commandCalls(redis), 'scan') - before).toBe(0);
    // the expired report stays in the index until REPORT_INDEX_SLACK_MS past its expiry (P154),
    // then leaves it at the next write or read
    expect(await redis.zscore(store.keys.appliedIndex(), store.keys.applied('scheduler', 'gone'))).not.toBeNull();
    await redis.zadd(store.keys.appliedIndex(), Date.now() - REPORT_INDEX_SLACK_MS - 1, store.keys.applied('scheduler', 'gone'));
    await configStatus(store, redis);
    expect(await redis.zrange(store.keys.appliedIndex(), '0', '-1')).toEqual([store.keys.applied('scheduler', 'live-1'), store.keys.applied('scheduler', 'live-2')]);
  });

  it("a kernel or gateway whose clock runs 120 s ahead neither drops nor ignores another kernel's policy-file rule ids (P195)", async () => {
    const key = 'cordum:safety:file-rules:skew';
    const now = Date.now();
    const entry = (id: string, at: number) => ({ instance_id: id, file_id: `f-${id}`, rule_ids: [`r-${id}`], expires_at: at + 90_000 });
    await publishFileRules(redis, key, entry('sk-on-time', now), now);
    // the fast kernel refreshes its own: the on-time kernel's entry, live, stays
    await publishFileRules(redis, key, entry('sk-fast', now + 120_000), now + 120_000);
    expect(Object.keys(await redis.hgetall(key)).sort()).toEqual(['sk-fast', 'sk-on-time']);
    // a reader 120 s ahead still sees both
    expect((await liveFileRules(redis, key, now + 120_000)).map((e) => e.instance_id)).toEqual(['sk-fast', 'sk-on-time']);
    // an entry CLOCK_SLACK_MS past its expiry is gone for readers and dropped at the next refresh
    const late = now + 90_000 + CLOCK_SLACK_MS + 1;
    expect((await liveFileRules(redis, key, late)).map((e) => e.instance_id)).toEqual(['sk-fast']);
    await publishFileRules(redis, key, entry('sk-fast', late), late);
    expect(Object.keys(await redis.hgetall(key))).toEqual(['sk-fast']);
  });

  it('a replica whose clock runs 90 s ahead hides no other replica from the status view, writing or reading (P154)', async () => {
    const index = 'cordum:config:reports:skew';
    const report = (instance: string) => ({ service: 'scheduler', instance_id: instance, revision: 0, hashes: {}, reported_at: new Date().toISOString(), checked: true });
    const onTime = (instance: string) => writeAppliedReport(redis, store.keys.applied('scheduler', instance), report(instance), 30_000, index);
    const ahead = jest.spyOn(Date, 'now');
    try {
      await onTime('on-time-1');
      const real = Date.now();
      ahead.mockImplementation(() => real + 90_000);
      await writeAppliedReport(redis, store.keys.applied('scheduler', 'fast'), report('fast'), 30_000, index);
      ahead.mockRestore();
      await onTime('on-time-2');
      const skewedStore = { ...store, keys: { ...store.keys, appliedIndex: () => index } };
      const seen = async () => (await configStatus(skewedStore, redis)).replicas.map((r) => r.instance_id);
      expect(await seen()).toEqual(['fast', 'on-time-1', 'on-time-2']);
      // the fast replica reading: it sees the others too
      const now = Date.now();
      jest.spyOn(Date, 'now').mockImplementation(() => now + 90_000);
      expect(await seen()).toEqual(['fast', 'on-time-1', 'on-time-2']);
    } finally {
      jest.restoreAllMocks();
    }
  });
});
