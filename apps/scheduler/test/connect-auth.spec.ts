import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { freePort, makeTestTls, repoRoot, startNats, startProcess, startRedis, stopAll, waitFor, type ManagedProcess, type TestServer, type TestTls } from '@cordum/testing';

// The scheduler process (bundled from src/ here, as `nx build` bundles it) against a NATS that
// requires a login: it logs in with the user and password of NATS_URL or of NATS_USER and
// NATS_PASSWORD_FILE, and no line it prints carries the password, not even when it is refused.
// And against a Redis that speaks TLS only (rediss:// with REDIS_TLS_*, P123).

const PASSWORD = 's3cret-9d41';

let dir: string;
let bundle: string;
let redis: TestServer;
let nats: TestServer;
const procs: ManagedProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sched-nats-auth-'));
  bundle = join(dir, 'main.js');
  buildSync({
    bundle: true,
    platform: 'node',
    target: 'node20',
    entryPoints: [join(repoRoot, 'apps/scheduler/src/main.ts')],
    outfile: bundle,
    loader: { '.lua': 'text' },
    tsconfig: join(repoRoot, 'tsconfig.base.json'),
    logLevel: 'silent',
  });
  [redis, nats] = await Promise.all([startRedis(), startNats({ args: ['--user', 'alice', '--pass', PASSWORD] })]);
});

afterAll(async () => {
  await stopAll(procs);
  await Promise.all([redis?.stop(), nats?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

async function scheduler(env: Record<string, string>): Promise<{ proc: ManagedProcess; port: number }> {
  const port = await freePort();
  const proc = startProcess('scheduler', process.execPath, [bundle], { REDIS_URL: redis.url, SCHEDULER_HTTP_ADDR: `127.0.0.1:${port}`, SAFETY_KERNEL_ADDR: '127.0.0.1:1', CORDUM_INSTANCE_ID: 'sched-auth', ...env }, dir);
  procs.push(proc);
  return { proc, port };
}

async function readyThenStop(proc: ManagedProcess, port: number): Promise<void> {
  await waitFor(async () => {
    if (!proc.running) throw new Error(`scheduler exited: ${proc.logs()}`);
    return (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200;
  }, 30_000, { message: 'scheduler /readyz 200' });
  proc.kill('SIGTERM');
  expect(await proc.waitExit(15_000)).toEqual({ code: 0, signal: null });
}

const withUserinfo = (url: string, userinfo: string): string => url.replace('nats://', `nats://${userinfo}@`);

describe('scheduler against nats-server --user alice --pass …', () => {
  it('NATS_URL=nats://alice:<password>@…: logs in, is ready, and never prints the password', async () => {
    const { proc, port } = await scheduler({ NATS_URL: withUserinfo(nats.url, `alice:${PASSWORD}`) });
    await readyThenStop(proc, port);
    expect(proc.hasLine('bus: connected to NATS')).toBe(true);
    expect(proc.logs()).not.toContain(PASSWORD);
    const config = proc.output.find((l) => l.includes('"config loaded"'))!;
    expect(JSON.parse(config)).toMatchObject({ config: { nats: { servers: [nats.url], user: 'alice', password: '<redacted>' } } });
  });

  it('NATS_USER and NATS_PASSWORD_FILE: logs in and is ready', async () => {
    const pwFile = join(dir, 'nats-password');
    writeFileSync(pwFile, `${PASSWORD}\n`);
    const { proc, port } = await scheduler({ NATS_URL: nats.url, NATS_USER: 'alice', NATS_PASSWORD_FILE: pwFile });
    await readyThenStop(proc, port);
    expect(proc.logs()).not.toContain(PASSWORD);
  });

  it('a wrong password: "service failed to start" naming the refusal and the user, exit 1, no password printed', async () => {
    const wrong = 'wrong-pw-5c0e';
    const { proc } = await scheduler({ NATS_URL: withUserinfo(nats.url, `alice:${wrong}`) });
    expect((await proc.waitExit(30_000)).code).toBe(1);
    const failed = proc.output.find((l) => l.includes('service failed to start'));
    expect(failed).toContain(`connect to ${nats.url}: 'Authorization Violation' (NATS refused the login: user \\"alice\\")`);
    expect(proc.logs()).not.toContain(wrong);
  });

  it('user:password in NATS_URL and NATS_USER too: one stderr line, exit 2', async () => {
    const { proc } = await scheduler({ NATS_URL: withUserinfo(nats.url, `alice:${PASSWORD}`), NATS_USER: 'alice', NATS_PASSWORD: PASSWORD });
    expect((await proc.waitExit(15_000)).code).toBe(2);
    expect(proc.errOutput).toEqual(['invalid config: a user:password in NATS_URL and NATS_USER are set together: log in to NATS one way (a user and password, a token, or NATS_CREDS_FILE)']);
    expect(proc.logs()).not.toContain(PASSWORD);
  });
});

describe('scheduler against a Redis that speaks TLS only and requires client certificates', () => {
  let tls: TestTls;
  let tlsRedis: TestServer;
  let plainNats: TestServer;
  beforeAll(async () => {
    tls = makeTestTls();
    [tlsRedis, plainNats] = await Promise.all([startRedis({ tls: { tls, verifyClients: true } }), startNats()]);
  });
  afterAll(async () => {
    await Promise.all([tlsRedis?.stop(), plainNats?.stop()]);
    tls?.remove();
  });

  it('rediss:// with REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE: connects and is ready', async () => {
    const { proc, port } = await scheduler({
      REDIS_URL: tlsRedis.url,
      REDIS_TLS_CA_FILE: tls.caFile,
      REDIS_TLS_CERT_FILE: tls.clientCertFile,
      REDIS_TLS_KEY_FILE: tls.clientKeyFile,
      NATS_URL: plainNats.url,
    });
    await readyThenStop(proc, port);
    const config = proc.output.find((l) => l.includes('"config loaded"'))!;
    expect(JSON.parse(config)).toMatchObject({ config: { redis: { url: tlsRedis.url, tls: { caFile: tls.caFile, certFile: tls.clientCertFile, keyFile: tls.clientKeyFile } } } });
  });

  it('REDIS_TLS_CA_FILE with redis://: one stderr line, exit 2', async () => {
    const { proc } = await scheduler({ REDIS_URL: tlsRedis.url.replace('rediss://', 'redis://'), REDIS_TLS_CA_FILE: tls.caFile, NATS_URL: plainNats.url });
    expect((await proc.waitExit(15_000)).code).toBe(2);
    expect(proc.errOutput).toEqual(['invalid config: REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://: write rediss:// to connect to Redis with TLS']);
  });
});
