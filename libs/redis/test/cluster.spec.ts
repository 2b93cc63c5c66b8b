import { Cluster, Command } from 'ioredis';
import { startRedisCluster, waitFor, type TestCluster } from '@cordum/testing';
import { countWrites } from './count-writes';
import { closeRedis, createRedis, defineScripts, evictionPolicies, isRedisUnavailable, isSlotMoving, KeyBuilder, pingRedis, redisErrorText, scanKeys, scriptSpec, warnIfEvicting, type RedisClient } from '../src';

const setGetLua = `-- KEYS[1] a, KEYS[2] b (same slot); ARGV[1] value; returns value read back from b
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]))
return redis.call('GET', KEYS[2])`;

describe('@cordum/redis on a 6-node Redis Cluster', () => {
  let cluster: TestCluster;
  let redis: RedisClient;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 4, minIdleConns: 1 });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('connects in cluster mode', async () => {
    expect(redis).toBeInstanceOf(Cluster);
    expect(await pingRedis(redis, 3000)).toBe(true);
    const masters = (redis as Cluster).nodes('master');
    expect(masters).toHaveLength(3);
  });

  it('runs a multi-key script on hash-tagged keys on every master, with NOSCRIPT fallback after SCRIPT FLUSH', async () => {
    const kb = new KeyBuilder('rc');
    const runner = defineScripts(redis, [scriptSpec('setGet-2.lua', setGetLua)]);
    // Enough ids to hit every master's slots.
    const ids = Array.from({ length: 30 }, (_, i) => `id${i}`);
    for (const id of ids) expect(await runner.run<string>('setGet', [kb.tagged('a', id), kb.tagged('b', id)], [`v-${id}`])).toBe(`v-${id}`);
    await Promise.all((redis as Cluster).nodes('master').map((n) => n.script('FLUSH')));
    for (const id of ids) expect(await runner.run<string>('setGet', [kb.tagged('a', id), kb.tagged('b', id)], [`w-${id}`])).toBe(`w-${id}`);
    expect(await redis.get(kb.tagged('b', 'id7'))).toBe('w-id7');
  });

  it("batches a turn's commands into one write per node socket, replies in order", async () => {
    // Batched by corked node sockets, not by auto-pipelining's per-turn Pipeline objects.
    expect((redis as Cluster).options.enableAutoPipelining).toBeFalsy();
    const masters = (redis as Cluster).nodes('master');
    await Promise.all(masters.map((n) => n.ping()));
    const counters = masters.map((n) => countWrites(n));
    const total = (): number => counters.reduce((a, c) => a + c.writes(), 0);
    // One hash tag: one slot, so one node gets all 100.
    const replies = await Promise.all(Array.from({ length: 100 }, () => redis.incr('{turn}:counter')));
    expect(replies).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(total()).toBe(1);
    // Keys over every master: one write to each.
    const kb = new KeyBuilder('turnrc');
    await Promise.all(Array.from({ length: 60 }, (_, i) => redis.set(kb.tagged('k', String(i)), '1')));
    expect(total()).toBe(1 + 3);
  });

  // The Cluster's offline queue is flushed through its sendCommand, and a delayed retry (CLUSTERDOWN,
  // TRYAGAIN, a failover) hands the command to a node's: neither sent one its timeout had rejected.
  it('a command whose caller already has its answer (timed out) is sent neither by the Cluster nor by a node', async () => {
    await redis.set('{answered}:n', '0');
    const answered = (): Command => {
      const c = new Command('incr', ['{answered}:n']);
      c.reject(new Error('Command timed out'));
      return c;
    };
    await expect((redis as Cluster).sendCommand(answered())).rejects.toThrow('Command timed out');
    // Every master (one owns the key; the others would answer MOVED).
    for (const node of (redis as Cluster).nodes('master')) await expect(node.sendCommand(answered())).rejects.toThrow('Command timed out');
    // Each master's connection, after the INCRs: "1" or more if one was sent.
    for (const node of (redis as Cluster).nodes('master')) await node.ping();
    expect(await redis.get('{answered}:n')).toBe('0');
  });

  it('P259: a script on a slot left mid-migration (a reshard that stopped) fails as a moving slot, not as Redis down, naming the fix, and runs once the slot is closed', async () => {
    const c = redis as Cluster;
    const kb = new KeyBuilder('open-slot');
    const [a, b] = [kb.tagged('a', 'x'), kb.tagged('b', 'x')];
    await redis.set(a, 'before'); // b is absent: the owner cannot run a script naming both while the slot migrates
    const slot = Number(await c.cluster('KEYSLOT', a));
    const masters = c.nodes('master');
    const owns = await Promise.all(masters.map((n) => n.get(a).then(() => true, () => false)));
    const owner = masters[owns.indexOf(true)]!;
    const target = masters[owns.indexOf(false)]!;
    const [ownerId, targetId] = await Promise.all([owner.cluster('MYID'), target.cluster('MYID')]);
    await target.cluster('SETSLOT', slot, 'IMPORTING', String(ownerId));
    await owner.cluster('SETSLOT', slot, 'MIGRATING', String(targetId));
    const runner = defineScripts(redis, [scriptSpec('setGet-2.lua', setGetLua)]);
    try {
      const err = await runner.run('setGet', [a, b], ['during']).then(() => null, (e: unknown) => e);
      // ioredis follows TRYAGAIN, MOVED and ASK until maxRedirections: whichever came last, the
      // slot will settle, so a consumer retries its message in place instead of spending a
      // delivery on it; the rest of Redis answers, so it is not "Redis down" (no consumer-wide hold).
      expect(err).toMatchObject({ code: 'redis_slot_moving' });
      expect(String((err as Error).message)).toMatch(/Too many Cluster redirections.*--cluster check/);
      expect({ moving: isSlotMoving(err), down: isRedisUnavailable(err) }).toEqual({ moving: true, down: false });
    } finally {
      await owner.cluster('SETSLOT', slot, 'STABLE');
      await target.cluster('SETSLOT', slot, 'STABLE');
    }
    expect(await runner.run<string>('setGet', [a, b], ['after'])).toBe('after');
    // The loop's error as ioredis words it when its last hop was a MOVED or an ASK.
    for (const last of ['MOVED 4859 127.0.0.1:7001', 'ASK 4859 127.0.0.1:7002', 'TRYAGAIN Multiple keys request during rehashing of slot']) {
      const loop = new Error(`Too many Cluster redirections. Last error: ReplyError: ${last}`);
      expect({ moving: isSlotMoving(loop), down: isRedisUnavailable(loop) }).toEqual({ moving: true, down: false });
      expect(redisErrorText(loop)).toContain('redis-cli --cluster check');
    }
    expect(isSlotMoving(new Error('CLUSTERDOWN The cluster is down'))).toBe(false);
    // ioredis spends the budget before it looks at the error: a timeout on the last try comes
    // wrapped alike, and is a timeout (Redis down), not a moving slot.
    const timedOut = new Error('Too many Cluster redirections. Last error: Error: Command timed out');
    expect({ moving: isSlotMoving(timedOut), down: isRedisUnavailable(timedOut) }).toEqual({ moving: false, down: true });
  });

  it('scanKeys finds keys on all masters', async () => {
    const kb = new KeyBuilder('scanrc');
    const want = Array.from({ length: 300 }, (_, i) => kb.key('k', String(i)));
    await Promise.all(want.map((k) => redis.set(k, '1')));
    // Sanity: the keys really are spread over more than one master.
    const perMaster = await Promise.all((redis as Cluster).nodes('master').map((n) => n.dbsize()));
    expect(perMaster.filter((n) => n > 0).length).toBe(3);
    const got = new Set<string>();
    for await (const k of scanKeys(redis, 'scanrc:k:*')) got.add(k);
    expect([...got].sort()).toEqual([...want].sort());
  });

  it('evictionPolicies reads every master, and warnIfEvicting names a policy that one master evicts with', async () => {
    expect(await evictionPolicies(redis)).toEqual(['noeviction']);
    const warned: unknown[] = [];
    expect(await warnIfEvicting(redis, (msg, fields) => warned.push({ msg, fields }))).toEqual([]);
    expect(warned).toEqual([]);
    const [first] = (redis as Cluster).nodes('master');
    await first!.config('SET', 'maxmemory-policy', 'volatile-lru');
    try {
      expect((await evictionPolicies(redis)).sort()).toEqual(['noeviction', 'volatile-lru']);
      expect(await warnIfEvicting(redis, (msg, fields) => warned.push({ msg, fields }))).toEqual(['volatile-lru']);
      expect(warned).toEqual([{ msg: expect.stringContaining('maxmemory-policy noeviction') as unknown, fields: expect.objectContaining({ maxmemory_policy: 'volatile-lru' }) as unknown }]);
    } finally {
      await first!.config('SET', 'maxmemory-policy', 'noeviction');
    }
  });
});

// Last in this file: it kills every node. With every connection gone the Cluster client queues
// commands in its own offline queue, which ioredis's per-node commandTimeout never reaches: a
// command waited for the whole outage (decisions.md P46) instead of failing within ~1.5 s.
describe('@cordum/redis when every cluster node is gone', () => {
  let cluster: TestCluster;
  let redis: RedisClient;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    redis = createRedis({ url: '', clusterAddresses: cluster.addresses.split(','), poolSize: 1, minIdleConns: 1 });
    await redis.set('before', '1');
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await cluster.stop();
  });

  it('a command fails within its timeout instead of waiting for the cluster to come back', async () => {
    for (const n of cluster.nodes) n.process.kill('SIGKILL');
    await Promise.all(cluster.nodes.map((n) => n.process.waitExit(5_000)));
    await waitFor(() => redis.status !== 'ready', 10_000, { message: 'the client saw the cluster go' });
    const t0 = Date.now();
    const outcome = await Promise.race([
      redis.get('before').then(() => 'answered', (err: unknown) => (err instanceof Error ? err.message : String(err))),
      new Promise<string>((r) => setTimeout(() => r('still waiting after 6 s'), 6_000).unref()),
    ]);
    expect(outcome).toMatch(/timed out|Connection is closed|max retries|isn't ready|None of startup nodes/i);
    expect(Date.now() - t0).toBeLessThan(4_000);
  }, 30_000);

  // Follows the test above: every node is still down. A command that timed out stayed in the
  // Cluster's offline queue (its retry strategy never gives up), which grew for the whole outage,
  // and every queued command was sent when the cluster came back: writes whose callers had been
  // told they failed ran late (the counters below read "200" and "8").
  it('commands that timed out during the outage are never sent, and the offline queue stays bounded', async () => {
    await waitFor(() => redis.status !== 'ready', 10_000, { message: 'the cluster is still gone' });
    const queued = (): number => (redis as unknown as { offlineQueue: { length: number } }).offlineQueue.length;
    const lengths: number[] = [];
    for (let round = 0; round < 4; round++) {
      // A MULTI too: a cluster pipeline re-creates its commands' promises when they all fail alike.
      const multi = redis.multi().incr('{gone}:m').incr('{gone}:m').exec().then(() => 'ran', (err: Error) => err.message);
      const outcomes = await Promise.all(Array.from({ length: 50 }, () => redis.incr('{gone}:n').then((v) => `ran ${v}`, (err: Error) => err.message)));
      expect(outcomes.every((o) => o === 'Command timed out')).toBe(true);
      expect(await multi).toBe('Command timed out');
      lengths.push(queued());
    }
    // 200 INCRs and 4 MULTIs (4 entries each) rejected: without the sweep the queue kept every one
    // (55, 109, 163, 217 with the GET above); with it, about what one round left at most.
    expect(Math.max(...lengths)).toBeLessThan(100);
    const restarted = [];
    for (const n of cluster.nodes) restarted.push(await n.restart());
    cluster.nodes.splice(0, cluster.nodes.length, ...restarted); // cluster.stop() ends these
    await waitFor(async () => (await pingRedis(redis, 1000)) || null, 60_000, { message: 'the cluster answers again' });
    // The nodes came back empty (nothing persisted): any value is a queued INCR sent late. These
    // GETs leave after the queue's flush, on the same master's connection.
    expect(await redis.get('{gone}:n')).toBeNull();
    expect(await redis.get('{gone}:m')).toBeNull();
    expect(queued()).toBe(0);
  }, 120_000);
});
