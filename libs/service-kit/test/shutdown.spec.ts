import { Latch } from '@cordum/testing';
import { createLogger, MAX_TIMER_MS, Shutdown } from '../src';

function quietLogger() {
  const lines: string[] = [];
  return { lines, logger: createLogger({ service: 'test', instance: 't', level: 'debug', write: (l) => lines.push(l) }) };
}

/** The SIGTERM handler that listen() added (called directly: a real signal would hit jest too). */
function newHandler(before: NodeJS.SignalsListener[]): (signal: NodeJS.Signals) => void {
  const added = process.listeners('SIGTERM').filter((l) => !before.includes(l));
  expect(added).toHaveLength(1);
  return added[0] as (signal: NodeJS.Signals) => void;
}

describe('Shutdown', () => {
  it("SIGHUP only logs, and says nothing when the process has its own SIGHUP listener (the kernel's reload) (P208)", async () => {
    const { logger, lines } = quietLogger();
    const s = new Shutdown({ logger, exit: () => undefined });
    const before = process.listeners('SIGHUP');
    s.listen();
    const hup = process.listeners('SIGHUP').find((l) => !before.includes(l)) as () => void;
    hup();
    expect(lines.filter((l) => l.includes('SIGHUP ignored'))).toHaveLength(1);
    const own = (): void => undefined;
    process.on('SIGHUP', own);
    try {
      hup();
      expect(lines.filter((l) => l.includes('SIGHUP ignored'))).toHaveLength(1);
    } finally {
      process.off('SIGHUP', own);
      await s.run(); // removes every handler listen() added
    }
    expect(process.listeners('SIGHUP')).toEqual(before);
  });

  it('ensureDeadline raises the whole-stop deadline for a part that needs longer, never lowers it (P218)', async () => {
    const { logger, lines } = quietLogger();
    const s = new Shutdown({ logger, timeoutMs: 200, exit: () => undefined });
    s.ensureDeadline(100, 'shorter: ignored');
    s.ensureDeadline(1_500, 'worker stopTimeoutMs');
    expect(s.deadlineMs).toBe(1_500);
    s.add('slow part', () => new Promise<void>((r) => setTimeout(r, 400)));
    await s.run();
    expect(s.outcome).toBe('clean');
    expect(lines.filter((l) => l.includes('shutdown: deadline raised'))).toEqual([expect.stringContaining('"why":"worker stopTimeoutMs"')]);
    s.ensureDeadline(5_000, 'too late: the stop ran');
    expect(s.deadlineMs).toBe(1_500);
  });

  it('ensureDeadline holds a deadline to what a Node timer can wait (P285: a longer one fired at once)', async () => {
    const { logger } = quietLogger();
    const s = new Shutdown({ logger, timeoutMs: 200, exit: () => undefined });
    s.ensureDeadline(2 ** 40, 'a worker stopTimeoutMs of years');
    expect(s.deadlineMs).toBe(MAX_TIMER_MS);
    s.add('a part that takes 300 ms', () => new Promise<void>((r) => setTimeout(r, 300)));
    await s.run();
    expect(s.outcome).toBe('clean');
  });

  it('run() is memoised: same promise, each cleanup once', async () => {
    const { logger } = quietLogger();
    const s = new Shutdown({ logger });
    let calls = 0;
    s.add('a', () => {
      calls++;
    });
    const p1 = s.run();
    const p2 = s.run();
    expect(p2).toBe(p1);
    await p1;
    await s.run();
    expect(calls).toBe(1);
    expect(s.outcome).toBe('clean');
  });

  it('runs cleanups in reverse registration order, all of them even when one throws', async () => {
    const { logger, lines } = quietLogger();
    const s = new Shutdown({ logger });
    const order: string[] = [];
    s.add('connections', () => void order.push('connections'));
    s.add('locks', async () => {
      await Promise.resolve();
      order.push('locks');
      throw new Error('release failed');
    });
    s.add('intake', async () => {
      await Promise.resolve();
      order.push('intake');
    });
    await s.run();
    expect(order).toEqual(['intake', 'locks', 'connections']);
    expect(s.outcome).toBe('error');
    const failed = lines.map((l) => JSON.parse(l) as { msg: string; cleanup?: string; err?: { message: string } }).find((r) => r.msg === 'shutdown: cleanup failed');
    expect(failed).toMatchObject({ cleanup: 'locks', err: { message: 'release failed' } });
  });

  it('a hanging cleanup: run() resolves at the deadline, exit(1), handlers removed', async () => {
    const { logger } = quietLogger();
    const exited = new Latch<number>();
    const s = new Shutdown({ logger, timeoutMs: 200, exit: (c) => exited.open(c) });
    s.add('hangs', () => new Promise<void>(() => undefined));
    const beforeTerm = process.listeners('SIGTERM');
    const beforeInt = process.listenerCount('SIGINT');
    s.listen();
    s.listen(); // installs once
    expect(process.listenerCount('SIGINT')).toBe(beforeInt + 1);
    const handler = newHandler(beforeTerm);

    const started = Date.now();
    handler('SIGTERM');
    handler('SIGTERM'); // a second signal during shutdown changes nothing
    expect(await exited.wait(5000)).toBe(1);
    const elapsedMs = Date.now() - started;
    expect(elapsedMs).toBeGreaterThanOrEqual(190);
    expect(elapsedMs).toBeLessThan(2000);
    expect(s.outcome).toBe('timeout');
    expect(process.listeners('SIGTERM')).toEqual(beforeTerm);
    expect(process.listenerCount('SIGINT')).toBe(beforeInt);
  });

  it('a clean signal-driven shutdown exits 0', async () => {
    const { logger } = quietLogger();
    const exited = new Latch<number>();
    const s = new Shutdown({ logger, exit: (c) => exited.open(c) });
    let stopped = false;
    s.add('service', () => {
      stopped = true;
    });
    const before = process.listeners('SIGTERM');
    s.listen();
    newHandler(before)('SIGTERM');
    expect(await exited.wait(5000)).toBe(0);
    expect(stopped).toBe(true);
    expect(process.listeners('SIGTERM')).toEqual(before);
  });

  it('a failing cleanup during a signal-driven shutdown exits 1', async () => {
    const { logger } = quietLogger();
    const exited = new Latch<number>();
    const s = new Shutdown({ logger, exit: (c) => exited.open(c) });
    s.add('bad', () => {
      throw new Error('nope');
    });
    const before = process.listeners('SIGTERM');
    s.listen();
    newHandler(before)('SIGTERM');
    expect(await exited.wait(5000)).toBe(1);
  });

  it('run() without a signal also removes the handlers and does not exit', async () => {
    const { logger } = quietLogger();
    const codes: number[] = [];
    const s = new Shutdown({ logger, exit: (c) => codes.push(c) });
    const before = process.listenerCount('SIGTERM');
    const beforeHup = process.listenerCount('SIGHUP');
    s.listen();
    expect(process.listenerCount('SIGHUP')).toBe(beforeHup + 1);
    await s.run();
    expect(process.listenerCount('SIGTERM')).toBe(before);
    expect(process.listenerCount('SIGHUP')).toBe(beforeHup);
    expect(codes).toEqual([]);
  });
});
