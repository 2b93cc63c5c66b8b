// P241: each service measures its clock against Redis's TIME and takes every timestamp other
// replicas read with clusterNow(). A host clock is simulated here by `hostNow`; clusterNow()
// moves by the offset measured against it.
import { REDIS_BACKENDS, startRedisBackend, waitFor, type RedisBackend } from '@cordum/testing';
import { CLOCK_OFFSET_MIN_MS, CLOCK_OFFSET_STEP_MS, CLOCK_STEP_MS, clockOffsetMs, closeRedis, clusterNow, createRedis, startClockSync, type RedisClient } from '../src';

describe.each(REDIS_BACKENDS)('clock sync against Redis TIME (%s Redis)', (kind) => {
  let server: RedisBackend;
  let redis: RedisClient;
  const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const log = {
    warn: (msg: string, fields?: Record<string, unknown>) => void logged.push({ level: 'warn', msg, fields }),
    info: (msg: string, fields?: Record<string, unknown>) => void logged.push({ level: 'info', msg, fields }),
  };

  beforeAll(async () => {
    server = await startRedisBackend(kind);
    redis = createRedis({ url: server.url, clusterAddresses: server.clusterAddresses, poolSize: 1, minIdleConns: 1 });
  }, 90_000);
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('a host 5 min behind measures +5 min and moves clusterNow() by it, with a warn; back on time, the offset is 0 again, with an info', async () => {
    const behind = startClockSync(redis, { log, hostNow: () => Date.now() - 300_000 });
    await behind.ready;
    behind.stop();
    const offset = clockOffsetMs();
    expect(Math.abs(offset - 300_000)).toBeLessThan(1_000);
    expect(Math.abs(clusterNow() - (Date.now() + offset))).toBeLessThanOrEqual(1);
    expect(logged.filter((l) => l.level === 'warn').map((l) => l.fields?.['offset_ms'])).toEqual([offset]);

    const onTime = startClockSync(redis, { log });
    await onTime.ready;
    onTime.stop();
    expect(clockOffsetMs()).toBe(0);
    expect(logged.at(-1)).toMatchObject({ level: 'info', fields: { previous_offset_ms: offset } });
  });

  it('keeps an applied offset through measurements a few milliseconds apart, and moves it for a change beyond CLOCK_OFFSET_STEP_MS', async () => {
    let skew = -300_000;
    const sync = startClockSync(redis, { hostNow: () => Date.now() + skew });
    try {
      await sync.ready;
      const first = clockOffsetMs();
      expect(Math.abs(first - 300_000)).toBeLessThan(1_000);
      skew -= CLOCK_OFFSET_STEP_MS / 5; // the next measurement lands 20 ms further
      await sync.syncOnce();
      expect(clockOffsetMs()).toBe(first);
      skew -= 10 * CLOCK_OFFSET_STEP_MS; // the host's clock jumped by a second
      await sync.syncOnce();
      expect(Math.abs(clockOffsetMs() - (first + 10.2 * CLOCK_OFFSET_STEP_MS))).toBeLessThan(2 * CLOCK_OFFSET_STEP_MS);
      skew = 0;
      await sync.syncOnce();
      expect(clockOffsetMs()).toBe(0);
    } finally {
      sync.stop();
    }
  });

  it('a host clock stepped between measurements does not move clusterNow(): it measures again at once (P283)', async () => {
    const real = Date.now.bind(Date);
    const sync = startClockSync(redis, { intervalMs: 3_600_000 });
    // A running service reads clusterNow() all the time; the reads notice the step.
    const offsetAfterReads = (): number => (clusterNow(), clockOffsetMs());
    try {
      await sync.ready;
      expect(clockOffsetMs()).toBe(0);
      // NTP (or a resumed VM) sets the host clock a minute ahead; the next scheduled sync is an hour away
      const stepped = jest.spyOn(Date, 'now').mockImplementation(() => real() + 60_000);
      try {
        expect(Math.abs(clusterNow() - real())).toBeLessThan(CLOCK_STEP_MS);
        // whole milliseconds, as Date.now() (P305: a fraction broke the integer wire fields)
        expect(Number.isInteger(clusterNow())).toBe(true);
        await waitFor(() => Math.abs(offsetAfterReads() + 60_000) < 1_000, 5_000, { message: 'measured again after the step' });
        expect(Math.abs(clusterNow() - real())).toBeLessThan(CLOCK_STEP_MS);
      } finally {
        stepped.mockRestore();
      }
      // and set back: the same
      expect(Math.abs(clusterNow() - real())).toBeLessThan(CLOCK_STEP_MS);
      await waitFor(() => offsetAfterReads() === 0, 5_000, { message: 'measured again after the step back' });
      expect(Math.abs(clusterNow() - real())).toBeLessThan(CLOCK_STEP_MS);
    } finally {
      sync.stop();
    }
  });

  it('applies no offset below CLOCK_OFFSET_MIN_MS (a host NTP keeps close keeps its own clock exactly)', async () => {
    const measured: number[] = [];
    const near = startClockSync(redis, { hostNow: () => Date.now() + CLOCK_OFFSET_MIN_MS / 2, onMeasure: (m) => void measured.push(m) });
    await near.ready;
    near.stop();
    expect(measured).toHaveLength(1);
    expect(Math.abs((measured[0] ?? 0) + CLOCK_OFFSET_MIN_MS / 2)).toBeLessThan(CLOCK_OFFSET_MIN_MS / 2);
    expect(clockOffsetMs()).toBe(0);
  });

  it('a measurement Redis does not answer keeps the last offset and resolves ready after its wait', async () => {
    const down = createRedis({ url: 'redis://127.0.0.1:1', clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
    const measured: number[] = [];
    const said: string[] = [];
    try {
      const sync = startClockSync(down, { onMeasure: (m) => void measured.push(m), log: { warn: (msg) => void said.push(msg), info: (msg) => void said.push(msg) } });
      await sync.ready;
      await sync.syncOnce(); // a second failure is not logged again
      sync.stop();
      expect(measured).toEqual([]);
      expect(clockOffsetMs()).toBe(0);
      expect(said).toEqual(["could not read redis's time (TIME); this host's clock is used until it can"]);
    } finally {
      await closeRedis(down);
    }
  });
});
