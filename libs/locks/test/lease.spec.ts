import { performance } from 'node:perf_hooks';
import { Registry, type Histogram } from 'prom-client';
import { closeRedis, createRedis, KeyBuilder, type RedisClient } from '@cordum/redis';
import { createElector, createLocks, defaultFenceKey, FENCE_CHECK_LUA, LockBusyError, type Locks } from '../src';
import { Latch, REDIS_BACKENDS, startRedis, startRedisBackend, waitFor, type RedisBackend } from '@cordum/testing';

describe.each(REDIS_BACKENDS)('@cordum/locks lease (single process, %s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  let locks: Locks;
  let registry: Registry;
  let n = 0;
  const kb = new KeyBuilder('lease');
  const keys = () => {
    n++;
    return { key: kb.tagged('lock', `j${n}`), fenceKey: kb.tagged('fence', `j${n}`), target: kb.tagged('target', `j${n}`) };
  };

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
    registry = new Registry();
    locks = createLocks(redis, { metrics: registry, histogramName: 'cordum_scheduler_job_lock_wait_seconds' });
  }, 90_000); // a 6-node cluster takes a few seconds to form
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('token is <owner>:<fence>; fence increases per acquire and is not consumed by a failed attempt', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 5000 });
    expect(a).not.toBeNull();
    expect(a!.token).toBe(`a:${a!.fence}`);
    expect(await redis.get(k.key)).toBe(a!.token);
    expect(await locks.tryAcquire({ ...k, owner: 'b', ttlMs: 5000 })).toBeNull();
    expect(await redis.get(k.fenceKey)).toBe(String(a!.fence));
    expect(await a!.release()).toBe(true);
    const b = await locks.tryAcquire({ ...k, owner: 'b', ttlMs: 5000 });
    expect(b!.fence).toBe(a!.fence + 1);
    await b!.release();
  });

  it('a waiter of this process is woken by the release (or markReleased) of the lease it waits for, not by its retry timer', async () => {
    const locks = createLocks(redis);
    // Retry pauses of 30–90 s: a waiter that acquires within the test's 10 s was woken by the release.
    const slow = { waitMs: 120_000, retryMs: 60_000 };
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 30_000 });
    expect(a).not.toBeNull();
    const waiting = locks.acquireAndRead({ ...k, readKey: k.target, owner: 'b', ttlMs: 30_000, ...slow });
    await waitFor(() => locks.waiters(k.key) === 1, 2_000, { message: 'b tried once and waits' });
    await a!.release();
    const b = await waitFor(() => Promise.race([waiting, new Promise<null>((r) => setTimeout(() => r(null), 50))]), 10_000, { message: 'woken by release' });
    expect(b.lease.fence).toBe(a!.fence + 1);
    // markReleased: the lock was deleted by a fenced script (here: DEL), the waiter is woken too.
    const waiting2 = locks.acquire({ ...k, owner: 'c', ttlMs: 30_000, ...slow });
    await waitFor(() => locks.waiters(k.key) === 1, 2_000, { message: 'c tried once and waits' });
    await redis.del(k.key);
    b.lease.markReleased();
    const c = await waitFor(() => Promise.race([waiting2, new Promise<null>((r) => setTimeout(() => r(null), 50))]), 10_000, { message: 'woken by markReleased' });
    expect(c.token).toBe(`c:${a!.fence + 2}`);
    await c.release();
    // whenReleased without a release resolves at its bound.
    let resolved = false;
    void locks.whenReleased(k.key, 30).then(() => { resolved = true; });
    expect(locks.waiters(k.key)).toBe(1);
    await waitFor(() => resolved, 2_000, { message: 'whenReleased bound' });
    expect(locks.waiters(k.key)).toBe(0);
  });

  it('acquireAndRead takes the lease and reads the guarded hash atomically; a busy lock reads nothing', async () => {
    const locks = createLocks(redis); // its own (unmetered) instance: the histogram test counts waits
    const k = keys();
    await redis.hset(k.target, 'state', 'PENDING', 'n', '1');
    const got = await locks.acquireAndRead({ ...k, readKey: k.target, owner: 'a', ttlMs: 5000, waitMs: 0 });
    expect(got).not.toBeNull();
    expect(got!.lease.token).toBe(`a:${got!.lease.fence}`);
    expect(await redis.get(k.key)).toBe(got!.lease.token);
    const h = got!.hash;
    expect(Object.fromEntries(Array.from({ length: h.length / 2 }, (_, i) => [h[2 * i], h[2 * i + 1]]))).toEqual({ state: 'PENDING', n: '1' });
    // Held: another owner neither gets the lease nor consumes a fence, within its wait.
    const started = performance.now();
    expect(await locks.acquireAndRead({ ...k, readKey: k.target, owner: 'b', ttlMs: 5000, waitMs: 60 })).toBeNull();
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(await redis.get(k.fenceKey)).toBe(String(got!.lease.fence));
    await got!.lease.release();
    const none = keys(); // nothing written to none.target (same slot as its lock)
    const absent = await locks.acquireAndRead({ ...none, readKey: none.target, owner: 'c', ttlMs: 5000, waitMs: 0 });
    expect(absent!.hash).toEqual([]);
    await absent!.lease.release();
  });

  it('markReleased forgets a lease a fenced script deleted: no renew, not safe to act, release is a no-op', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 5000 });
    a!.startAutoRenew();
    await redis.del(k.key); // what a job-store transition with `release` does after checking the token
    a!.markReleased();
    expect(a!.safeToAct(0)).toBe(false);
    const b = await locks.tryAcquire({ ...k, owner: 'b', ttlMs: 5000 });
    expect(await a!.release()).toBe(false);
    expect(await redis.get(k.key)).toBe(b!.token); // a's release did not touch b's lease
    await b!.release();
  });

  it('default fence key: <key>:fence for a hash-tagged key, {<key>}:fence otherwise, so both share a cluster slot', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ key: k.key, owner: 'a', ttlMs: 5000 });
    expect(await redis.get(`${k.key}:fence`)).toBe(String(a!.fence));
    await a!.release();
    // A leader key such as cordum:reconciler:default has no tag: `<key>:fence` would hash elsewhere.
    const plain = `leader:plain-${kind}-${Math.random().toString(36).slice(2)}`;
    const b = await locks.tryAcquire({ key: plain, owner: 'b', ttlMs: 5000 });
    expect(b).not.toBeNull();
    expect(await redis.get(`{${plain}}:fence`)).toBe(String(b!.fence));
    const read = await createLocks(redis, { metrics: new Registry() }).acquireAndRead({ key: `${plain}:r`, owner: 'c', ttlMs: 5000, waitMs: 0, readKey: `{${plain}:r}:data` });
    expect(read?.lease.fence).toBe(1);
    await Promise.all([b!.release(), read!.lease.release()]);
    expect({ tagged: defaultFenceKey('cordum:scheduler:job:{j1}'), plain: defaultFenceKey('cordum:replayer:pending'), empty: defaultFenceKey('a{}b') }).toEqual({
      tagged: 'cordum:scheduler:job:{j1}:fence',
      plain: '{cordum:replayer:pending}:fence',
      empty: '{a{}b}:fence',
    });
  });

  it('an elector on an untagged key is elected (a leader lease on a cluster)', async () => {
    const elected = new Latch();
    const elector = locks.elector({ key: `leader:el-${kind}-${Math.random().toString(36).slice(2)}`, owner: 'e', ttlMs: 3000, renewMs: 1000, onElected: () => elected.open() });
    elector.start();
    try {
      await elected.wait(5000);
      expect(elector.isLeader()).toBe(true);
    } finally {
      await elector.stop();
    }
  });

  it('an elector that is not eligible gives the lease up at its next renew and does not campaign; another takes over (P190)', async () => {
    const key = `leader:elig-${kind}-${Math.random().toString(36).slice(2)}`;
    let aMay = true;
    let asked = 0;
    let aTries = 0;
    const a = createElector(
      (o) => {
        aTries++;
        return locks.tryAcquire(o);
      },
      {
        key,
        owner: 'a',
        ttlMs: 3000,
        renewMs: 100,
        eligible: () => {
          asked++;
          return aMay;
        },
      },
    );
    const b = locks.elector({ key, owner: 'b', ttlMs: 3000, renewMs: 100 });
    a.start();
    try {
      await waitFor(() => a.isLeader(), 5000, { message: 'a elected' });
      b.start();
      aMay = false;
      await waitFor(() => b.isLeader(), 5000, { message: 'b takes over well before the 3 s TTL would free the key' });
      expect(a.isLeader()).toBe(false);
      // b stops and frees the key: a, still not eligible, asks on each tick and never campaigns.
      await b.stop();
      expect(await redis.exists(key)).toBe(0);
      const [triesBefore, askedBefore] = [aTries, asked];
      await waitFor(() => asked >= askedBefore + 5, 5000, { message: 'five more ticks of a' });
      expect(aTries).toBe(triesBefore);
      expect(await redis.exists(key)).toBe(0);
      aMay = true;
      await waitFor(() => a.isLeader(), 5000, { message: 'a elected once eligible again' });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('(d) renew never re-creates a deleted or expired key and never extends another holder', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 5000 });
    await redis.del(k.key);
    expect(await a!.renew()).toBe(false);
    expect(await redis.exists(k.key)).toBe(0);
    expect(a!.safeToAct(0)).toBe(false);

    const b = await locks.tryAcquire({ ...k, owner: 'b', ttlMs: 300 });
    await waitFor(async () => (await redis.exists(k.key)) === 0, 5000, { message: 'b expires' });
    expect(await b!.renew()).toBe(false);
    expect(await redis.exists(k.key)).toBe(0);

    const old = await locks.tryAcquire({ ...k, owner: 'old', ttlMs: 5000 });
    await redis.set(k.key, 'someone:999', 'PX', 800); // as if it expired and someone else took it
    expect(await old!.renew()).toBe(false);
    expect(await redis.pttl(k.key)).toBeLessThanOrEqual(800);
    expect(await old!.release()).toBe(false);
    expect(await redis.get(k.key)).toBe('someone:999');
  });

  it('release deletes only our own token', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 300 });
    await waitFor(async () => locks.tryAcquire({ ...k, owner: 'b', ttlMs: 5000 }), 5000);
    expect(await a!.release()).toBe(false);
    expect((await redis.get(k.key))?.startsWith('b:')).toBe(true);
  });

  it('(e) auto-renew keeps a lease past several TTLs, and it expires once renewal stops', async () => {
    const k = keys();
    // renewed every ttl/3: a 2 s TTL survives the jest worker going ~1.3 s without CPU (600 ms did not)
    const ttlMs = 2_000;
    const lease = await locks.tryAcquire({ ...k, owner: 'a', ttlMs });
    const lost = new Latch();
    lease!.startAutoRenew(() => lost.open());
    const t0 = performance.now();
    let attempts = 0;
    const competitors: string[] = []; // a throw inside waitFor's callback would only make it poll again
    await waitFor(async () => {
      attempts++;
      const other = await locks.tryAcquire({ ...k, owner: 'b', ttlMs });
      if (other) competitors.push(other.token);
      return performance.now() - t0 > 3 * ttlMs;
    }, 15_000, { intervalMs: 50 });
    expect(competitors).toEqual([]);
    expect(attempts).toBeGreaterThan(10);
    expect(await redis.get(k.key)).toBe(lease!.token);
    expect(lease!.safeToAct(100)).toBe(true);
    expect(lost.opened).toBe(false);

    lease!.stopAutoRenew();
    const t1 = performance.now();
    const b = await waitFor(() => locks.tryAcquire({ ...k, owner: 'b', ttlMs }), 10_000);
    expect(performance.now() - t1).toBeLessThan(2 * ttlMs);
    expect(b.fence).toBe(lease!.fence + 1);
  });

  it('auto-renew reports loss once when the key is deleted', async () => {
    const k = keys();
    const lease = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 600 });
    let calls = 0;
    const lost = new Latch();
    lease!.startAutoRenew(() => {
      calls++;
      lost.open();
    });
    await redis.del(k.key);
    await lost.wait(2000);
    expect(calls).toBe(1);
    expect(lease!.isLost).toBe(true);
    expect(lease!.safeToAct(0)).toBe(false);
    expect(await redis.exists(k.key)).toBe(0);
  });

  it('safeToAct compares time since the last renew with ttl - margin on the monotonic clock', async () => {
    const k = keys();
    // 3 s: the renew below has ~2 s before the key expires in Redis (at 400 ms it had ~100 ms,
    // which a late poll timer on a loaded box could miss)
    const lease = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 3_000 });
    expect(lease!.safeToAct(100)).toBe(true);
    expect(lease!.safeToAct(3_000)).toBe(false);
    expect(lease!.safeToAct()).toBe(false); // default margin 5 s > ttl
    await waitFor(() => !lease!.safeToAct(2_000), 5_000);
    expect(lease!.sinceLastRenewMs()).toBeGreaterThanOrEqual(1_000);
    expect(await lease!.renew()).toBe(true); // still within TTL in Redis
    expect(lease!.safeToAct(2_000)).toBe(true);
    await lease!.release();
    expect(lease!.safeToAct(0)).toBe(false);
  });

  it('fencedSet writes only with the current token; FENCE_CHECK_LUA is the rule', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 5000 });
    expect(await locks.fencedSet(k.key, k.target, a!.token, 'v1')).toBe(1);
    expect(await locks.fencedSet(k.key, k.target, 'a:0', 'bad')).toBe(-2);
    await a!.release();
    expect(await locks.fencedSet(k.key, k.target, a!.token, 'late')).toBe(-2);
    expect(await redis.get(k.target)).toBe('v1');
    expect(FENCE_CHECK_LUA).toContain("redis.call('GET', KEYS[1]) ~= ARGV[1]");
  });

  it('acquire waits with retries up to waitMs and observes the wait in the named histogram', async () => {
    const k = keys();
    const a = await locks.tryAcquire({ ...k, owner: 'a', ttlMs: 5000 });
    const t0 = performance.now();
    expect(await locks.acquire({ ...k, owner: 'b', ttlMs: 5000, waitMs: 150, retryMs: 10 })).toBeNull();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    // Released mid-wait: the waiter gets it.
    const pending = locks.acquire({ ...k, owner: 'c', ttlMs: 5000, waitMs: 5000, retryMs: 10 });
    await a!.release();
    const c = await pending;
    expect(c?.owner).toBe('c');
    const metric = await (registry.getSingleMetric('cordum_scheduler_job_lock_wait_seconds') as Histogram).get();
    const count = (result: string) => metric.values.find((v) => v.metricName?.endsWith('_count') && v.labels['result'] === result)?.value;
    expect(count('timeout')).toBe(1);
    expect(count('acquired')).toBe(1);
    const sumTimeout = metric.values.find((v) => v.metricName?.endsWith('_sum') && v.labels['result'] === 'timeout')?.value;
    expect(sumTimeout).toBeGreaterThanOrEqual(0.15);
    // A second Locks on the same registry reuses the histogram instead of throwing.
    expect(() => createLocks(redis, { metrics: registry, histogramName: 'cordum_scheduler_job_lock_wait_seconds' })).not.toThrow();
    createLocks(redis, { metrics: registry });
    expect(registry.getSingleMetric('cordum_lock_wait_seconds')).toBeDefined();
    await c!.release();
  });

  it('LockBusyError has a stable code', () => {
    const e = new LockBusyError('k', 50);
    expect(e.code).toBe('lock_busy');
    expect(e).toBeInstanceOf(Error);
  });
});

describe('@cordum/locks elector when Redis goes away', () => {
  it('a leader that cannot renew steps down before its lease expires', async () => {
    const server = await startRedis();
    const redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
    const locks = createLocks(redis);
    const elected = new Latch();
    const revoked = new Latch<number>();
    // steps down at last renew + ttl - renewMs: 1 s of slack for a late timer on a loaded machine
    const ttlMs = 3_000;
    const renewMs = 1_000;
    const elector = locks.elector({ key: 'el:down', owner: 'x', ttlMs, renewMs, onElected: () => elected.open(), onRevoked: () => revoked.open(performance.now()) });
    try {
      elector.start();
      await elected.wait(5000);
      expect(elector.isLeader()).toBe(true);
      const lease = elector.lease()!;
      await server.process.stop(5000);
      const lastOkAgeAtStop = lease.sinceLastRenewMs();
      const stoppedAt = performance.now();
      const revokedAt = await revoked.wait(10_000);
      // Stepped down before the lease could have expired in Redis (last renew + TTL).
      expect(revokedAt - stoppedAt).toBeLessThan(ttlMs - lastOkAgeAtStop);
      expect(elector.isLeader()).toBe(false);
    } finally {
      await elector.stop();
      await closeRedis(redis);
      await server.stop();
    }
  });
});

describe('@cordum/locks release when Redis is away', () => {
  it('releaseOrRetry deletes the lock once Redis is back, long before its TTL (a plain failed release leaves it for the whole TTL)', async () => {
    // AOF with fsync on every write, so the locks survive the restart as they would on a
    // persistent Redis; `rel:kept` (never released) shows that they did.
    let server = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
    const redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'release-retry' });
    const locks = createLocks(redis);
    let observer: RedisClient | undefined;
    try {
      const lease = await locks.tryAcquire({ key: 'rel:away', owner: 'x', ttlMs: 30_000 });
      expect(await locks.tryAcquire({ key: 'rel:kept', owner: 'x', ttlMs: 30_000 })).not.toBeNull();
      server.process.kill('SIGKILL');
      await server.process.waitExit(5_000);
      const errors: unknown[] = [];
      await lease!.releaseOrRetry({ retryEveryMs: 100, onError: (err) => errors.push(err) });
      expect(errors).toHaveLength(1);
      server = await server.restart();
      observer = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'release-retry-observer' });
      await waitFor(async () => (await observer!.exists('rel:away')) === 0, 5_000, { message: 'lock released by a retry' });
      expect(await observer.exists('rel:kept')).toBe(1);
    } finally {
      if (observer) await closeRedis(observer);
      await closeRedis(redis);
      await server.stop();
    }
  });
});
