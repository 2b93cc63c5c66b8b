import { startProcess, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { Command, type Redis } from 'ioredis';
import { countWrites } from './count-writes';
import {
  closeRedis, createRedis, defineScripts, evictionPolicies, isRedisUnavailable, KeyBuilder, pingRedis, RedisError, scanKeys,
  redisLogEvents, scriptCodes, scriptSpec, toRedisError, warnIfEvicting, type RedisClient,
} from '../src';

const incrLua = `-- KEYS[1] counter; ARGV[1] step; returns the new value, or -2 when step is negative
if tonumber(ARGV[1]) < 0 then return -2 end
return redis.call('INCRBY', KEYS[1], ARGV[1])`;

describe('@cordum/redis standalone', () => {
  let server: TestServer;
  let redis: RedisClient;

  beforeAll(async () => {
    server = await startRedis();
    redis = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1, name: 'redis-spec' });
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('connects, pings and names the connection', async () => {
    expect(await pingRedis(redis)).toBe(true);
    const list = (await redis.client('LIST')) as string;
    expect(list).toContain('name=redis-spec');
  });

  it('warnIfEvicting is silent under noeviction and names any other maxmemory-policy', async () => {
    const warned: string[] = [];
    const warn = (msg: string, fields: Record<string, unknown>) => warned.push(`${msg} ${String(fields['maxmemory_policy'])}`);
    expect(await evictionPolicies(redis)).toEqual(['noeviction']);
    expect(await warnIfEvicting(redis, warn)).toEqual([]);
    await redis.config('SET', 'maxmemory-policy', 'allkeys-lru');
    try {
      expect(await warnIfEvicting(redis, warn)).toEqual(['allkeys-lru']);
      expect(warned).toEqual(['redis may evict keys under memory pressure: set maxmemory-policy noeviction allkeys-lru']);
    } finally {
      await redis.config('SET', 'maxmemory-policy', 'noeviction');
    }
  });

  it('evictionPolicies answers nothing, without throwing, when Redis is gone', async () => {
    const gone = createRedis({ url: 'redis://127.0.0.1:1', clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
    try {
      expect(await evictionPolicies(gone, 300)).toEqual([]);
    } finally {
      await closeRedis(gone);
    }
  });

  it('scriptSpec parses <name>-<numKeys>.lua', () => {
    expect(scriptSpec('src/lua/acquire-2.lua', 'x')).toEqual({ name: 'acquire', lua: 'x', numberOfKeys: 2 });
    expect(() => scriptSpec('acquire.lua', 'x')).toThrow(/numKeys/);
    expect(scriptSpec('lua/index-batch-n.lua', 'x')).toEqual({ name: 'index-batch', lua: 'x', numberOfKeys: null });
  });

  it('a <name>-n.lua script takes as many keys as each call passes', async () => {
    const runner = defineScripts(redis, [scriptSpec('count-n.lua', `for i = 1, #KEYS do redis.call('INCR', KEYS[i]) end\nreturn #KEYS`)]);
    expect(await runner.run<number>('count', ['n:a', 'n:b', 'n:c'], [])).toBe(3);
    expect(await runner.run<number>('count', ['n:a'], [])).toBe(1);
    expect(await redis.mget('n:a', 'n:b', 'n:c')).toEqual(['2', '1', '1']);
  });

  it('defineScripts runs a script and falls back to EVAL after SCRIPT FLUSH', async () => {
    const runner = defineScripts(redis, [scriptSpec('incr-1.lua', incrLua)]);
    const k = new KeyBuilder('t1').key('counter');
    expect(await runner.run<number>('incr', [k], [2])).toBe(2);
    await redis.script('FLUSH');
    expect(await redis.script('EXISTS', '0000000000000000000000000000000000000000')).toEqual([0]);
    // NOSCRIPT path: must still succeed and re-cache the script.
    expect(await runner.run<number>('incr', [k], [3])).toBe(5);
    await expect(runner.run('incr', [], [1])).rejects.toMatchObject({ code: 'script_error' });
    await expect(runner.run('nope', [k], [1])).rejects.toBeInstanceOf(RedisError);
  });

  it('maps negative script codes to named errors in one place', async () => {
    const runner = defineScripts(redis, [scriptSpec('incr-1.lua', incrLua)]);
    const codes = scriptCodes({ [-2]: 'negative_step' });
    const res = await runner.run<number>('incr', ['t2:counter'], [-1]);
    expect(codes.codeOf(res)).toBe('negative_step');
    expect(() => codes.check('incr', res)).toThrow(expect.objectContaining({ code: 'negative_step' }) as Error);
    expect(codes.check('incr', 7)).toBe(7);
    expect(codes.codeOf(-9)).toBe('script_error');
  });

  it('KeyBuilder builds prefixed and hash-tagged keys', () => {
    expect(new KeyBuilder().key('job', 'meta')).toBe('job:meta');
    expect(new KeyBuilder().tagged('job:fence', 'abc')).toBe('job:fence:{abc}');
    expect(new KeyBuilder('cordum').tagged('scheduler:job', 'x')).toBe('cordum:scheduler:job:{x}');
  });

  it('scanKeys yields every matching key', async () => {
    const kb = new KeyBuilder('scan');
    const want = Array.from({ length: 1200 }, (_, i) => kb.key('k', String(i)));
    const p = redis.pipeline();
    for (const k of want) p.set(k, '1');
    await p.exec();
    await redis.set('other:1', '1');
    const got = new Set<string>();
    for await (const k of scanKeys(redis, 'scan:k:*')) got.add(k);
    expect(got.size).toBe(1200);
    expect([...got].sort()).toEqual([...want].sort());
  });

  it('closeRedis is idempotent and leaves no connection behind', async () => {
    const c = createRedis({ url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, name: 'close-me' });
    await waitFor(() => pingRedis(c), 5000);
    await Promise.all([closeRedis(c), closeRedis(c)]);
    await closeRedis(c);
    expect(c.status).toBe('end');
    await waitFor(async () => !((await redis.client('LIST')) as string).includes('name=close-me'), 5000);
  });

  // A queue's flush (the offline queue once the client is ready) hands each queued command to
  // sendCommand; ioredis sent one whose timeout had already rejected its caller, so Redis ran it late.
  it.each([1, 4])('a command whose caller already has its answer (timed out) is not sent (poolSize %i)', async (poolSize) => {
    const c = createRedis({ url: server.url, clusterAddresses: [], poolSize, minIdleConns: 1 });
    try {
      await c.set('answered:n', '0');
      const incr = new Command('incr', ['answered:n']);
      incr.reject(new Error('Command timed out')); // as its timeout does, while it waits in the queue
      await expect(c.sendCommand(incr)).rejects.toThrow('Command timed out');
      // Same connection, after it: "1" if the INCR was sent.
      expect(await c.get('answered:n')).toBe('0');
    } finally {
      await closeRedis(c);
    }
  });

  describe('one socket write per event-loop turn (poolSize > 1, as the client above)', () => {
    beforeAll(() => waitFor(() => pingRedis(redis), 5000));

    it('sends the commands of one turn in one write, in order, with every reply', async () => {
      expect((redis as Redis).options.enableAutoPipelining).toBeFalsy();
      const w = countWrites(redis);
      const replies = await Promise.all(Array.from({ length: 200 }, () => redis.incr('turn:counter')));
      expect(replies).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      expect(w.writes()).toBe(1);
      // The next turn's commands go out on their own, without waiting for another batch.
      const next = await Promise.all([redis.get('turn:counter'), redis.incr('turn:counter')]);
      expect(next).toEqual(['200', 201]);
      expect(w.writes()).toBe(2);
    });

    it('a MULTI and a pipeline sent in the same turn keep their place in the order', async () => {
      const [before, tx, piped, after] = await Promise.all([
        redis.set('turn:k', 'a'),
        redis.multi().append('turn:k', 'b').get('turn:k').exec(),
        redis.pipeline().append('turn:k', 'c').get('turn:k').exec(),
        redis.get('turn:k'),
      ]);
      expect(before).toBe('OK');
      expect(tx).toEqual([[null, 2], [null, 'ab']]);
      expect(piped).toEqual([[null, 3], [null, 'abc']]);
      expect(after).toBe('abc');
    });

    it('a lazy client sends its first commands once connected, then batches on the new socket', async () => {
      const c = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 0 });
      try {
        expect(c.status).toBe('wait');
        expect(await Promise.all([c.set('lazy:k', '1'), c.get('lazy:k')])).toEqual(['OK', '1']);
        const w = countWrites(c);
        expect(await Promise.all([c.incr('lazy:k'), c.incr('lazy:k'), c.incr('lazy:k')])).toEqual([2, 3, 4]);
        expect(w.writes()).toBe(1);
      } finally {
        await closeRedis(c);
      }
    });

    it('after a reconnect the new socket is batched too', async () => {
      const c = createRedis({ url: server.url, clusterAddresses: [], poolSize: 4, minIdleConns: 1 });
      try {
        await waitFor(() => pingRedis(c), 5000);
        const first = (c as Redis).stream;
        expect(await redis.client('KILL', 'ID', String(await c.client('ID')))).toBe(1);
        await waitFor(async () => (c as Redis).stream !== first && (await pingRedis(c, 500)), 10_000, { message: 'client reconnects' });
        const w = countWrites(c);
        expect(await Promise.all(Array.from({ length: 50 }, () => c.incr('re:counter')))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
        expect(w.writes()).toBe(1);
      } finally {
        await closeRedis(c);
      }
    });
  });
});

describe('@cordum/redis when the server goes away', () => {
  it('reports an outage as one throttled error and its end, and ioredis prints nothing to stderr', async () => {
    const printed = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    const server = await startRedis();
    const errors: { message: string; suppressed: number }[] = [];
    const restored: number[] = [];
    let raw = 0;
    const c = createRedis({
      url: server.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1,
      events: { error: (err, suppressed) => void errors.push({ message: err.message, suppressed }), restored: (ms) => void restored.push(ms) },
    });
    // not an 'error' listener: with none but the client's own, ioredis would print each error
    c.on('reconnecting', () => void raw++);
    try {
      expect(await pingRedis(c)).toBe(true);
      await server.process.stop(5000);
      // every failed reconnect is an error event (backoff ≤ 1 s): wait for several
      await waitFor(() => raw >= 4, 10_000, { message: 'failed reconnects' });
      expect(errors).toHaveLength(1);
      expect(errors[0]?.message).toMatch(/ECONNREFUSED|Connection is closed|connect/);
      const again = startProcess('redis-again', 'redis-server', ['--port', String(server.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', server.dir]);
      try {
        await waitFor(() => restored.length === 1, 10_000, { message: 'restored reported' });
        expect(restored[0]).toBeGreaterThan(0);
        expect(errors.length).toBeLessThanOrEqual(2); // a different message may be reported once
      } finally {
        await again.stop(5000);
      }
      expect(printed.mock.calls.filter((call) => String(call[0]).includes('[ioredis]'))).toEqual([]);
    } finally {
      printed.mockRestore();
      await closeRedis(c);
      await server.stop();
    }
  });

  it('redisLogEvents logs one JSON-able line per report', () => {
    const lines: [string, string, Record<string, unknown> | undefined][] = [];
    const ev = redisLogEvents({ warn: (m, f) => void lines.push(['warn', m, f]), info: (m, f) => void lines.push(['info', m, f]) });
    ev.error(new Error('connect ECONNREFUSED 127.0.0.1:1'), 0);
    ev.error(new Error('connect ECONNREFUSED 127.0.0.1:1'), 59);
    ev.restored(1234);
    expect(lines).toEqual([
      ['warn', 'redis connection error', { err: 'connect ECONNREFUSED 127.0.0.1:1' }],
      ['warn', 'redis connection error', { err: 'connect ECONNREFUSED 127.0.0.1:1', suppressed: 59 }],
      ['info', 'redis connection restored', { down_ms: 1234 }],
    ]);
  });

  it.each([1, 4])('pingRedis turns false and commands fail fast with redis_unavailable; recovers on restart (poolSize %i)', async (poolSize) => {
    const server = await startRedis();
    const c = createRedis({ url: server.url, clusterAddresses: [], poolSize, minIdleConns: 1 });
    try {
      expect(await pingRedis(c)).toBe(true);
      await server.process.stop(5000);
      await waitFor(async () => !(await pingRedis(c, 500)), 5000);
      // Several commands at different points of the reconnect backoff: each must fail within 2 s.
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const err = await c.set('k', 'v').then(() => null, (e: unknown) => e);
        const elapsed = performance.now() - t0;
        expect(err).not.toBeNull();
        expect(isRedisUnavailable(err)).toBe(true);
        expect(toRedisError(err).code).toBe('redis_unavailable');
        expect(elapsed).toBeLessThan(2000);
      }
      // Same port again: the client reconnects by itself (no restart of the caller).
      const again = startProcess('redis-again', 'redis-server', ['--port', String(server.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', server.dir]);
      try {
        await waitFor(() => pingRedis(c, 500), 10_000, { message: 'client reconnects' });
        expect(await c.set('k', 'v')).toBe('OK');
      } finally {
        await again.stop(5000);
      }
    } finally {
      await closeRedis(c);
      await server.stop();
    }
  });
});
