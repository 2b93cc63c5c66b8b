import { Counter } from 'prom-client';
import { ANY_HOST, createLogger, createMetricsRegistry, createReadinessLog, NOT_READY_START_GRACE_MS, sharedCheck, startHealthServer, zAddr, type HealthServer } from '../src';

const lines: string[] = [];
const logger = createLogger({ service: 'test', instance: 'test-1', level: 'info', write: (l) => void lines.push(l) });

describe('health server', () => {
  let server: HealthServer;
  let base: string;
  let depUp = true;
  let hang = false;
  const registry = createMetricsRegistry({ service: 'test', pod: 'test-1' });

  beforeAll(async () => {
    new Counter({ name: 'cordum_health_test_total', help: 'registered by the test', registers: [registry] }).inc(3);
    server = await startHealthServer({
      addr: { host: '127.0.0.1', port: 0 },
      registry,
      logger,
      checkTimeoutMs: 200,
      checks: [{ name: 'redis', check: () => depUp }],
      extra: (app) => {
        app.get('/extra', (_req, res) => void res.json({ extra: true }));
      },
    });
    server.addCheck({ name: 'nats', check: () => (hang ? new Promise<boolean>(() => undefined) : Promise.resolve(true)) });
    base = `http://127.0.0.1:${server.port}`;
  });

  afterAll(async () => {
    await server.close();
  });

  it('binds port 0 and reports the bound port', () => {
    expect(server.port).toBeGreaterThan(0);
  });

  it('/healthz answers 200 {status: ok}', async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('/readyz is 200 when every check passes, 503 naming the failing one otherwise', async () => {
    depUp = true;
    let res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ready: true, checks: { redis: true, nats: true } });

    depUp = false;
    res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ ready: false, checks: { redis: false, nats: true } });
    depUp = true;
  });

  it('/readyz answers 503 within the check timeout when a dependency hangs', async () => {
    hang = true;
    const started = Date.now();
    const res = await fetch(`${base}/readyz`);
    const elapsedMs = Date.now() - started;
    hang = false;
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ ready: false, checks: { redis: true, nats: false } });
    expect(elapsedMs).toBeGreaterThanOrEqual(150);
    expect(elapsedMs).toBeLessThan(2000);
  });

  it('/readyz counts a throwing check as not ready', async () => {
    server.addCheck({
      name: 'boom',
      check: () => {
        throw new Error('boom');
      },
    });
    const res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { checks: Record<string, boolean> }).checks['boom']).toBe(false);
  });

  it('/metrics serves the registry in Prometheus text format', async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    expect(await res.text()).toMatch(/^cordum_health_test_total\{service="test",pod="test-1"\} 3$/m);
  });

  it('/metrics carries cordum_ready, 1 or 0 by the same checks, and a change is logged once (P219)', async () => {
    let up = true;
    lines.length = 0; // the earlier tests' servers logged their own changes
    const own = await startHealthServer({ addr: { host: '127.0.0.1', port: 0 }, registry: createMetricsRegistry({ service: 'test', pod: 'test-2' }), logger, checks: [{ name: 'redis', check: () => up }] });
    try {
      const url = `http://127.0.0.1:${own.port}`;
      const ready = async () => /^cordum_ready\{[^}]*\} (\d)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1];
      // Unready at start: the start itself, at debug only (not a warning npm start would report).
      up = false;
      expect(await ready()).toBe('0');
      expect(lines.filter((l) => l.includes('"level":"warn"') || l.includes('"msg":"ready again"'))).toEqual([]);
      up = true;
      expect(await ready()).toBe('1');
      up = false;
      expect(await ready()).toBe('0');
      expect(await ready()).toBe('0');
      expect((await fetch(`${url}/readyz`)).status).toBe(503);
      expect(lines.filter((l) => l.includes('"msg":"not ready"') && l.includes('"failing":["redis"]'))).toHaveLength(1);
      up = true;
      expect(await ready()).toBe('1');
      expect(lines.filter((l) => l.includes('"msg":"ready again"'))).toHaveLength(1);
    } finally {
      await own.close();
    }
  });

  it('a replica never ready says so at warn once its start has taken NOT_READY_START_GRACE_MS, naming what fails, once per change (P315)', () => {
    let t = 0;
    const seen: string[] = [];
    const log = createLogger({ service: 't', instance: 't', level: 'info', write: (l) => seen.push(l) });
    const note = createReadinessLog(log, { now: () => t });
    const warned = (): unknown[] => seen.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'not ready').map((l) => [l['failing'], l['never_ready']]);
    note(false, ['redis']);
    t = NOT_READY_START_GRACE_MS - 1;
    note(false, ['redis']);
    expect(warned()).toEqual([]); // the start itself
    t = NOT_READY_START_GRACE_MS;
    note(false, ['redis']);
    note(false, ['redis']);
    expect(warned()).toEqual([[['redis'], true]]);
    note(false, ['redis', 'config']);
    expect(warned()).toEqual([[['redis'], true], [['redis', 'config'], true]]);
    note(true, []);
    expect(seen.filter((l) => l.includes('"msg":"ready again"'))).toEqual([]); // its first ready is no recovery
    note(false, ['nats']);
    note(false, ['nats']);
    expect(warned()).toEqual([[['redis'], true], [['redis', 'config'], true], [['nats'], undefined]]);
    note(true, []);
    expect(seen.filter((l) => l.includes('"msg":"ready again"'))).toHaveLength(1);
  });

  it('cordum_ready follows the health server that serves the registry now, not a closed one', async () => {
    const registry = createMetricsRegistry({ service: 'test', pod: 'test-3' });
    const first = await startHealthServer({ addr: { host: '127.0.0.1', port: 0 }, registry, logger, checks: [{ name: 'old', check: () => false }] });
    await first.close();
    const second = await startHealthServer({ addr: { host: '127.0.0.1', port: 0 }, registry, logger, checks: [{ name: 'new', check: () => true }] });
    try {
      expect(await (await fetch(`http://127.0.0.1:${second.port}/metrics`)).text()).toMatch(/^cordum_ready\{[^}]*\} 1$/m);
    } finally {
      await second.close();
    }
  });

  it('extra(app) adds service routes', async () => {
    const res = await fetch(`${base}/extra`);
    expect(await res.json()).toEqual({ extra: true });
  });
});

describe('health server close', () => {
  it('is idempotent and drops keep-alive connections', async () => {
    const registry = createMetricsRegistry({ service: 'test', pod: 'p' });
    const server = await startHealthServer({ addr: { host: '127.0.0.1', port: 0 }, registry, logger });
    // fetch keeps the socket alive; close() must not wait for the client to let go
    expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
    const first = server.close();
    expect(server.close()).toBe(first);
    await first;
    await server.close();
    await expect(fetch(`http://127.0.0.1:${server.port}/healthz`)).rejects.toThrow();
  });

  it('rejects when the port is taken', async () => {
    const registry = createMetricsRegistry({ service: 'test', pod: 'p' });
    const a = await startHealthServer({ addr: { host: '127.0.0.1', port: 0 }, registry, logger });
    await expect(startHealthServer({ addr: { host: '127.0.0.1', port: a.port }, registry, logger })).rejects.toThrow(/EADDRINUSE/);
    await a.close();
  });
});

// P240: a `:port` address (every deployment manifest's form) binds every address, IPv6 and IPv4,
// so an IPv6-only cluster reaches the probes and /metrics; `0.0.0.0:port` stays IPv4 only.
// (This machine has IPv6 loopback; a machine without IPv6 binds IPv4 only, Node's fallback.)
describe('health server listen address', () => {
  const reaches = async (host: string, port: number): Promise<boolean> => {
    try {
      return (await fetch(`http://${host}:${port}/healthz`)).status === 200;
    } catch {
      return false;
    }
  };

  it('":port" takes IPv6 and IPv4 connections; "0.0.0.0:port" only IPv4', async () => {
    const registry = createMetricsRegistry({ service: 'test', pod: 'p' });
    const any = await startHealthServer({ addr: zAddr.parse(':0'), registry, logger });
    const v4 = await startHealthServer({ addr: zAddr.parse('0.0.0.0:0'), registry, logger });
    try {
      expect(zAddr.parse(':0').host).toBe(ANY_HOST);
      expect({ v4: await reaches('127.0.0.1', any.port), v6: await reaches('[::1]', any.port) }).toEqual({ v4: true, v6: true });
      expect({ v4: await reaches('127.0.0.1', v4.port), v6: await reaches('[::1]', v4.port) }).toEqual({ v4: true, v6: false });
    } finally {
      await any.close();
      await v4.close();
    }
  });
});

describe('sharedCheck (P268)', () => {
  it('callers at the same time share one call; an answer younger than maxAge is given again; an older one is asked anew', async () => {
    let calls = 0;
    let release = (_v: boolean): void => undefined;
    const check = sharedCheck(() => {
      calls += 1;
      return new Promise<boolean>((r) => (release = r));
    }, 200);
    const together = [check(), check(), check()];
    expect(calls).toBe(1);
    release(true);
    expect(await Promise.all(together)).toEqual([true, true, true]);
    expect(await check()).toBe(true);
    expect(calls).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    const again = check();
    expect(calls).toBe(2);
    release(false);
    expect(await again).toBe(false);
  });

  it('a check that throws or rejects counts as false, and the next call after maxAge asks again', async () => {
    let calls = 0;
    const check = sharedCheck(() => {
      calls += 1;
      if (calls === 1) throw new Error('thrown');
      return calls === 2 ? Promise.reject(new Error('down')) : Promise.resolve(true);
    }, 50);
    expect(await check()).toBe(false);
    await new Promise((r) => setTimeout(r, 80));
    expect(await check()).toBe(false);
    await new Promise((r) => setTimeout(r, 80));
    expect(await check()).toBe(true);
    expect(calls).toBe(3);
  });
});
