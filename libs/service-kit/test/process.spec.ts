import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { canConnect, freePort, type ManagedProcess, repoRoot, startProcess, stopAll, waitFor } from '@cordum/testing';

// Real processes: exit codes and stderr are what operators and orchestrators see.
let dir: string;
let bundle: string;
const procs: ManagedProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'service-kit-'));
  bundle = join(dir, 'main.js');
  buildSync({
    bundle: true,
    platform: 'node',
    target: 'node20',
    entryPoints: [join(__dirname, 'fixtures/service-main.ts')],
    outfile: bundle,
    tsconfig: join(repoRoot, 'tsconfig.base.json'), // the fixture's deps resolve like an app bundle's
    logLevel: 'silent',
  });
});

afterAll(async () => {
  await stopAll(procs);
  rmSync(dir, { recursive: true, force: true });
});

function spawnFixture(env: Record<string, string>, args: string[] = []): ManagedProcess {
  const p = startProcess('fixture', process.execPath, [bundle, ...args], { CORDUM_LOG_LEVEL: 'info', CORDUM_INSTANCE_ID: 'fixture-1', ...env }, dir);
  procs.push(p);
  return p;
}

function records(p: ManagedProcess): Record<string, unknown>[] {
  return p.output.filter((l) => !p.errOutput.includes(l)).map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('service process', () => {
  // The fixture connects to nothing; without the check it would start, log 'fixture ready' and run on.
  it.each([['--help'], ['-h']])('%s: usage on stdout naming the service and where its env is documented, exit 0, nothing started', async (flag) => {
    const p = spawnFixture({}, [flag]);
    expect((await p.waitExit(10_000)).code).toBe(0);
    expect(p.errOutput).toEqual([]);
    const out = p.output.join('\n');
    expect(p.output[0]).toMatch(/^fixture: /);
    expect(out).toContain('environment variables');
    expect(out).toContain('apps/fixture/README.md');
    expect(out).toContain('docs/operations.md');
    expect(out).toContain('--help');
    expect(p.hasLine('fixture ready')).toBe(false);
    expect(p.hasLine('config loaded')).toBe(false);
  });

  it.each([
    [['--bogus'], '--bogus'],
    [['--help', '--bogus'], '--bogus'],
    [['REDIS_URL=redis://elsewhere:6379'], 'REDIS_URL=redis://elsewhere:6379'],
  ])('arguments %j: exit 2 with exactly one stderr line, nothing started', async (args, bad) => {
    const p = spawnFixture({}, args);
    expect((await p.waitExit(10_000)).code).toBe(2);
    expect(p.errOutput).toEqual([`invalid arguments: unknown argument "${bad}"; services are configured by environment variables (see --help)`]);
    expect(p.output).toEqual(p.errOutput); // nothing on stdout either
  });

  it('a bad argument is reported before a bad env value', async () => {
    const p = spawnFixture({ REDIS_POOL_SIZE: 'abc' }, ['--bogus']);
    expect((await p.waitExit(10_000)).code).toBe(2);
    expect(p.errOutput).toHaveLength(1);
    expect(p.errOutput[0]).toMatch(/^invalid arguments: unknown argument "--bogus"/);
  });

  it('bad config: exit 2 with exactly one stderr line naming the variable', async () => {
    const p = spawnFixture({ REDIS_POOL_SIZE: 'abc' });
    expect((await p.waitExit(10_000)).code).toBe(2);
    expect(p.errOutput).toEqual(['invalid config: REDIS_POOL_SIZE must be a positive integer (got "abc")']);
    expect(p.output).toEqual(p.errOutput); // nothing on stdout either
  });

  it('bad address: exit 2 naming the app-specific variable', async () => {
    const p = spawnFixture({ FIXTURE_HTTP_ADDR: 'nowhere' });
    expect((await p.waitExit(10_000)).code).toBe(2);
    expect(p.errOutput).toHaveLength(1);
    expect(p.errOutput[0]).toMatch(/^invalid config: FIXTURE_HTTP_ADDR must be an address/);
  });

  it('SIGTERM: stops cleanly and exits 0 within the deadline', async () => {
    const p = spawnFixture({ FIXTURE_API_KEY: 'super-secret-key', REDIS_URL: 'redis://:redis-pw@127.0.0.1:6379' });
    await waitFor(() => p.hasLine('fixture ready'), 10_000);
    const ready = records(p).find((r) => r['msg'] === 'fixture ready')!;
    expect(ready).toMatchObject({ level: 'info', service: 'fixture', instance: 'fixture-1' });
    const health = await fetch(`http://127.0.0.1:${String(ready['port'])}/healthz`);
    expect(health.status).toBe(200);

    // config is logged once, without secrets
    expect(p.logs()).not.toContain('super-secret-key');
    expect(p.logs()).not.toContain('redis-pw');
    expect(records(p).some((r) => r['msg'] === 'config loaded')).toBe(true);

    const started = Date.now();
    p.kill('SIGTERM');
    expect((await p.waitExit(10_000)).code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(p.hasLine('fixture stopped')).toBe(true);
    expect(p.errOutput).toEqual([]);
  });

  it('SIGHUP: logged as ignored, and the service runs on (P208; Node would end it at once)', async () => {
    const p = spawnFixture({});
    await waitFor(() => p.hasLine('fixture ready'), 10_000);
    const port = String(records(p).find((r) => r['msg'] === 'fixture ready')!['port']);
    p.kill('SIGHUP');
    await waitFor(() => records(p).some((r) => String(r['msg']).startsWith('SIGHUP ignored')), 5_000);
    p.kill('SIGHUP');
    await waitFor(() => records(p).filter((r) => String(r['msg']).startsWith('SIGHUP ignored')).length === 2, 5_000);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(p.hasLine('shutdown: signal received')).toBe(false);
    // still stops gracefully afterwards
    p.kill('SIGTERM');
    expect((await p.waitExit(10_000)).code).toBe(0);
    expect(p.hasLine('fixture stopped')).toBe(true);
  });

  it('SIGTERM with a hung stop(): exits 1 at the shutdown deadline', async () => {
    const p = spawnFixture({ FIXTURE_HANG_STOP: 'true', FIXTURE_SHUTDOWN_TIMEOUT: '300ms' });
    await waitFor(() => p.hasLine('fixture ready'), 10_000);
    const started = Date.now();
    p.kill('SIGTERM');
    expect((await p.waitExit(10_000)).code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(p.hasLine('shutdown: deadline exceeded')).toBe(true);
  });

  it.each([
    ['timer', 'uncaught exception', 'thrown in a timer on purpose'],
    ['rejection', 'unhandled rejection', 'rejected on purpose'],
  ])('an error nobody catches (%s): one JSON fatal line, the service stopped, exit 1', async (mode, kind, message) => {
    const p = spawnFixture({ FIXTURE_THROW: mode });
    expect((await p.waitExit(10_000)).code).toBe(1);
    const fatal = records(p).filter((r) => r['msg'] === `fatal: ${kind}; stopping`);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ level: 'error', service: 'fixture' });
    expect(JSON.stringify(fatal[0])).toContain(message);
    expect(p.hasLine('fixture stopped')).toBe(true);
    // no bare stack trace: every line is a JSON record
    expect(p.output.every((l) => l.startsWith('{'))).toBe(true);
  });

  it('a storm of rejections while the stop they started runs does not cut it: every one logged, the stop finishes, exit 1', async () => {
    const p = spawnFixture({ FIXTURE_THROW: 'storm' });
    expect((await p.waitExit(10_000)).code).toBe(1);
    expect(records(p).filter((r) => r['msg'] === 'fatal: unhandled rejection; stopping').length).toBeGreaterThanOrEqual(3);
    expect(p.hasLine('fixture stopped')).toBe(true);
  });

  it('an error nobody catches during a stop SIGTERM started: logged, the stop finishes, exit 1 (not 0)', async () => {
    const p = spawnFixture({ FIXTURE_THROW: 'in-stop' });
    await waitFor(() => p.hasLine('fixture ready'), 10_000);
    p.kill('SIGTERM');
    expect((await p.waitExit(10_000)).code).toBe(1);
    const fatal = records(p).filter((r) => r['msg'] === 'fatal: uncaught exception; stopping');
    expect(fatal).toHaveLength(1);
    expect(JSON.stringify(fatal[0])).toContain('thrown during the stop on purpose');
    expect(p.hasLine('fixture stopped')).toBe(true);
  });

  it('SIGTERM while starting: the start it cuts is not a failed start (one info line, no error), exit 0 (P290)', async () => {
    const p = spawnFixture({ FIXTURE_SLOW_START: 'true' });
    await waitFor(() => p.hasLine('fixture waiting for its bus'), 10_000);
    p.kill('SIGTERM');
    expect((await p.waitExit(10_000)).code).toBe(0);
    expect(records(p).filter((r) => r['level'] === 'error')).toEqual([]);
    expect(records(p).find((r) => r['msg'] === 'service start ended by the stop')).toMatchObject({ level: 'info', err: 'connection closed' });
    expect(p.hasLine('service started')).toBe(false);
    expect(p.hasLine('fixture stopped')).toBe(true);
  });

  it('a failing start() stops what was started and exits 1', async () => {
    const p = spawnFixture({ FIXTURE_FAIL_START: 'true' });
    expect((await p.waitExit(10_000)).code).toBe(1);
    expect(p.hasLine('service failed to start')).toBe(true);
    expect(p.hasLine('start failed on purpose')).toBe(true);
    expect(p.hasLine('fixture stopped')).toBe(true);
  });
});

describe('a log sink that fails (P160)', () => {
  /** The fixture with stdout on `stdout` (a pipe we hold, or a file); resolves its exit code, or null when it is still running after 10 s (then killed). */
  function exitAfterSigterm(child: ChildProcess): Promise<number | null> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 10_000);
      child.once('exit', (code) => {
        clearTimeout(t);
        resolve(code);
      });
      child.kill('SIGTERM');
    });
  }

  it('stdout whose reader is gone (EPIPE): SIGTERM still stops the service, exit 0', async () => {
    const child = spawn(process.execPath, [bundle], { cwd: dir, env: { ...process.env, CORDUM_LOG_LEVEL: 'info', CORDUM_INSTANCE_ID: 'fixture-epipe' }, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('fixture ready'), 10_000, { message: 'fixture ready' });
    child.stdout!.destroy(); // the launcher reading it was killed
    // Before P160 the signal's own log line failed with EPIPE, the fatal line about that failed
    // too, and so on: the process spun at 100 % CPU and never ran its stop.
    expect(await exitAfterSigterm(child)).toBe(0);
  });

  it('stdout on a full disk (ENOSPC from the first line): the service runs, and SIGTERM stops it, exit 0', async () => {
    const port = await freePort();
    const full = openSync('/dev/full', 'w');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [bundle], { cwd: dir, env: { ...process.env, CORDUM_LOG_LEVEL: 'info', FIXTURE_HTTP_ADDR: `127.0.0.1:${port}` }, stdio: ['ignore', full, 'ignore'] });
    } finally {
      closeSync(full);
    }
    await waitFor(() => canConnect(port), 10_000, { message: 'the health server listens' });
    expect(await exitAfterSigterm(child)).toBe(0);
  });
});
