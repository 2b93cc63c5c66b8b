// `npm start` as a newcomer runs it: it prints a working URL, a dev key and a
// curl example; the example returns a SUCCEEDED job; Ctrl-C stops everything,
// in order, without losing in-flight jobs or leaving a process behind.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { canConnect, childEnv, freePort, ManagedProcess, repoRoot, startNats, startProcess, startRedis, waitFor, type TestServer } from '@cordum/testing';

const launcherPath = join(repoRoot, 'tools/stack/start.mjs');
const KEY = 'npm-start-test-key';

// A port offset keeps each stack clear of anything on the default ports, of the test
// harness's ports (24000–32000, libs/testing ports.ts) and of Linux's ephemeral range
// (32768–60999): offsets 12000–14000 put the services on 20080–23297 and 62051–64151, and a
// Redis or NATS the launcher starts itself on 18379–20379 or 16222–18222. Each test takes its
// own offset, so one test's leftovers (or logs) never meet another's.
const offsets = Array.from({ length: 21 }, (_, i) => 12000 + i * 100).sort(() => Math.random() - 0.5);
const usedOffsets: number[] = [];
function takeOffset(): number {
  const o = offsets.pop();
  if (o === undefined) throw new Error('out of port offsets');
  usedOffsets.push(o);
  rmSync(logDirOf(o), { recursive: true, force: true });
  return o;
}
const logDirOf = (offset: number): string => join(repoRoot, '.cordum', offset > 0 ? `logs-p${offset}` : 'logs');

/** The launcher's inputs a test sets itself, never inherited from whoever runs jest (P167). */
const launcherEnv = (env: Record<string, string>): NodeJS.ProcessEnv => childEnv(env);

/**
 * Starts the launcher (or `npm start`) as a terminal would run a foreground job: in its own
 * process group, so a signal to the whole group (`process.kill(-pid)`, what Ctrl-C does)
 * reaches it and whatever shares its group, and nothing in the test runner's group.
 */
function launch(name: string, args: string[], env: Record<string, string>, cmd: string[] = [process.execPath, launcherPath]): ManagedProcess {
  const [bin, ...pre] = cmd;
  const child = spawn(bin!, [...pre, ...args], { cwd: repoRoot, env: launcherEnv(env), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  return new ManagedProcess(name, child);
}

/** Waits for `p` to exit with `code` after exactly one line on stderr, which contains `text`; answers that line. */
async function refusal(p: ManagedProcess, code: number, text: string, timeoutMs = 30_000): Promise<string> {
  expect((await p.waitExit(timeoutMs)).code).toBe(code);
  expect(p.errOutput).toEqual([expect.stringContaining(text)]);
  return p.errOutput[0] as string;
}

/** pid → (ppid, state) from /proc: the launcher's children are found by their parent. */
function procTable(): Map<number, { ppid: number; state: string }> {
  const out = new Map<number, { ppid: number; state: string }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(d), { ppid: Number(ppid), state: state ?? '' });
    } catch {
      // ended while we looked
    }
  }
  return out;
}

function descendantsOf(pid: number): number[] {
  const table = procTable();
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [c, info] of table) {
      if (info.ppid === p && !found.includes(c)) {
        found.push(c);
        queue.push(c);
      }
    }
  }
  return found;
}

/** Running (a zombie, exited but not reaped yet, does not count). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Whatever a failed test left running is killed, so it cannot hold the next test's ports. */
const leftovers = new Set<number>();
function track(pids: number[]): number[] {
  for (const p of pids) leftovers.add(p);
  return pids;
}
function killLeftovers(): void {
  for (const p of leftovers) {
    if (alive(p)) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  leftovers.clear();
}

async function waitUp(p: ManagedProcess): Promise<void> {
  await waitFor(() => !p.running || p.hasLine('Cordum is up.'), 120_000, { message: `${p.name} up`, intervalMs: 200 });
  expect(p.running ? 'running' : p.logs()).toBe('running');
}

const headers = { 'X-API-Key': KEY, 'Content-Type': 'application/json' };
async function submitEcho(base: string, prompt: string): Promise<string> {
  const res = await fetch(`${base}/api/v1/jobs`, { method: 'POST', headers, body: JSON.stringify({ topic: 'job.echo', prompt }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { job_id: string }).job_id;
}
async function getJob(base: string, id: string): Promise<{ state: string; finished_at?: string; result?: { echo?: string } }> {
  const res = await fetch(`${base}/api/v1/jobs/${id}`, { headers });
  return (await res.json()) as { state: string; finished_at?: string; result?: { echo?: string } };
}

/** The JSON log record of `file` (one of the stack's logs) with this msg, once it was written. */
async function logRecord(file: string, msg: string): Promise<Record<string, unknown>> {
  return waitFor(() => {
    if (!existsSync(file)) return null;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec['msg'] === msg) return rec;
    }
    return null;
  }, 20_000, { message: `"${msg}" in ${file}`, intervalMs: 100 });
}

describe('npm start', () => {
  let redis: TestServer;
  let nats: TestServer;
  /** REDIS_URL and NATS_URL of this file's own servers: a stack on them starts in seconds. */
  let servers: Record<string, string>;
  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
    servers = { REDIS_URL: redis.url, NATS_URL: nats.url, CORDUM_API_KEY: KEY };
  });
  afterEach(() => killLeftovers());
  afterAll(async () => {
    await Promise.all([redis?.stop(), nats?.stop()]);
    for (const o of usedOffsets) {
      for (const d of [`logs-p${o}`, `redis-${6379 + o}`, `nats-${4222 + o}`]) rmSync(join(repoRoot, '.cordum', d), { recursive: true, force: true });
    }
  });

  it('brings the stack up with replicas, serves the curl example, and stops on SIGINT', async () => {
    const offset = takeOffset();
    const launcher = startProcess('npm-start', process.execPath, [
      launcherPath,
      '--replicas', 'scheduler=2,api-gateway=2',
      '--port-offset', String(offset),
      // a NATS_URL comma list (CONTRACT §1) is checked at its first entry
    ], { REDIS_URL: redis.url, NATS_URL: `${nats.url},${nats.url}`, CORDUM_API_KEY: KEY });
    try {
      await waitFor(() => !launcher.running || launcher.hasLine('Cordum is up.'), 120_000, { message: 'stack up', intervalMs: 200 });
      expect(launcher.running ? 'running' : launcher.logs()).toBe('running');
      track(descendantsOf(launcher.pid));
      const urlLine = launcher.output.find((l) => l.includes('gateway URL'));
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(urlLine ?? '')?.[0];
      expect(url).toBe(`http://127.0.0.1:${8081 + offset}`);
      expect(launcher.hasLine(`scheduler-2`)).toBe(true);
      expect(launcher.hasLine(`api-gateway-2`)).toBe(true);
      expect(launcher.hasLine(/curl -s -X POST .*\/api\/v1\/jobs/)).toBe(true);
      // the key came from the environment, not .cordum/dev.env, and the banner says so
      expect(launcher.hasLine(`${KEY}   (from CORDUM_API_KEY in your environment)`)).toBe(true);
      // with a port offset the instance ids differ from a first stack's on the same Redis and NATS
      const metrics = await (await fetch(`http://127.0.0.1:${9092 + offset}/metrics`)).text();
      expect(metrics).toContain(`pod="api-gateway-1-p${offset}"`);

      // The printed curl example, done with fetch, against both gateway replicas.
      for (const base of [url!, `http://127.0.0.1:${8081 + offset + 100}`]) {
        const jobId = await submitEcho(base, 'hello');
        const job = await waitFor(async () => {
          const body = await getJob(base, jobId);
          return body.state === 'SUCCEEDED' ? body : null;
        }, 30_000, { message: 'curl example job succeeded' });
        expect(job.result?.echo).toBe('hello');
      }

      launcher.kill('SIGINT');
      const exit = await launcher.waitExit(60_000);
      expect(exit.code).toBe(0);
      expect(launcher.hasLine('stopped')).toBe(true);
    } finally {
      await launcher.stop();
    }
  });

  it("Ctrl-C (SIGINT to the launcher's process group) lets an in-flight job finish and leaves no child running", async () => {
    // The launcher starts its own Redis and NATS here: with them in the terminal's process
    // group, Ctrl-C would end them with the worker and the job's result would be lost.
    const offset = takeOffset();
    const env = { CORDUM_API_KEY: KEY, WORKER_ECHO_DELAY: '4s' };
    const base = `http://127.0.0.1:${8081 + offset}`;
    const first = launch('npm-start-ctrl-c', ['--port-offset', String(offset)], env);
    let second: ManagedProcess | undefined;
    try {
      await waitUp(first);
      expect(first.hasLine(`redis: started on 127.0.0.1:${6379 + offset}`)).toBe(true);
      expect(first.hasLine(`nats: started on 127.0.0.1:${4222 + offset}`)).toBe(true);
      const pids = track(descendantsOf(first.pid));
      expect(pids.length).toBeGreaterThanOrEqual(6); // redis, nats, kernel, scheduler, gateway, worker

      const jobId = await submitEcho(base, 'in flight at Ctrl-C');
      await waitFor(async () => (await getJob(base, jobId)).state === 'RUNNING', 15_000, { message: 'job RUNNING', intervalMs: 50 });
      process.kill(-first.pid, 'SIGINT');
      const exit = await first.waitExit(90_000);
      const stoppedAt = Date.now();
      expect(exit.code).toBe(0);
      expect(pids.filter(alive)).toEqual([]);
      // Workers stop before schedulers (P209): a scheduler still ran to record the result.
      expect(first.hasLine('stopping: gateways, workers, schedulers, kernels, then servers started here')).toBe(true);

      // Same offset, same data dirs: the result the worker wrote while stopping is there.
      second = launch('npm-start-ctrl-c-again', ['--port-offset', String(offset)], env);
      await waitUp(second);
      track(descendantsOf(second.pid));
      let last: { state: string; finished_at?: string; result?: { echo?: string } } = { state: '' };
      await waitFor(async () => {
        last = await getJob(base, jobId);
        return !['PENDING', 'SCHEDULED', 'DISPATCHED', 'RUNNING', ''].includes(last.state);
      }, 30_000, { message: 'job terminal after the restart', intervalMs: 100 }).catch(() => undefined);
      expect(last.state).toBe('SUCCEEDED');
      expect(last.result?.echo).toBe('in flight at Ctrl-C');
      // Finished during the first stack's stop, not applied by the second stack's scheduler.
      expect(Date.parse(last.finished_at ?? '')).toBeLessThan(stoppedAt);
    } finally {
      await Promise.all([first.stop(), second?.stop()]);
    }
  }, 240_000);

  /** Starts a stack (the launcher, or `npm start` when `cmd` says so), signals that process, and
   * asserts that every process under it is gone once it has exited. */
  async function signalStopsAll(name: string, signal: NodeJS.Signals, o: { args: string[]; env: Record<string, string>; cmd?: string[]; minPids: number }): Promise<void> {
    const p = launch(name, o.args, o.env, o.cmd);
    try {
      await waitUp(p);
      const pids = track(descendantsOf(p.pid));
      expect(pids.length).toBeGreaterThanOrEqual(o.minPids);
      p.kill(signal);
      await p.waitExit(90_000);
      await waitFor(() => pids.filter(alive).length === 0, 60_000, { message: `no process of the stack left (${pids.filter(alive).join(' ')})`, intervalMs: 200 });
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      await p.stop();
    }
  }

  it('stops every child it started on SIGHUP (a closed terminal), leaving none behind', async () => {
    // Its own Redis and NATS too: at least six processes.
    await signalStopsAll('npm-start-hup', 'SIGHUP', { args: ['--port-offset', String(takeOffset())], env: { CORDUM_API_KEY: KEY }, minPids: 6 });
  }, 180_000);

  it('`npm start` hands signals to the launcher: SIGTERM to npm stops the whole stack', async () => {
    // The launcher and its four services.
    await signalStopsAll('npm-start-npm', 'SIGTERM', { args: ['--', '--port-offset', String(takeOffset())], env: servers, cmd: ['npm', 'start'], minPids: 5 });
  }, 180_000);

  it("refuses to start over another stack's ports with one readable line, and never prints the banner", async () => {
    const offset = takeOffset();
    const first = launch('npm-start-first', ['--port-offset', String(offset)], servers);
    let second: ManagedProcess | undefined;
    try {
      await waitUp(first);
      track(descendantsOf(first.pid));
      second = launch('npm-start-second', ['--port-offset', String(offset)], servers);
      // The first run's pid file names it.
      await refusal(second, 1, `another npm start (pid ${first.pid}) runs this stack`);
      expect(second.hasLine('Cordum is up.')).toBe(false);
      // Ports taken by something that is not a stack of ours: the port and the service are named.
      const squatter = createServer();
      const squatPort = 50051 + offset - 1000;
      await new Promise<void>((r) => squatter.listen(squatPort, '127.0.0.1', r));
      try {
        const third = launch('npm-start-third', ['--port-offset', String(offset - 1000)], servers);
        const line = await refusal(third, 1, `port ${squatPort} (safety-kernel-1 SAFETY_KERNEL_GRPC_ADDR) is already in use`);
        expect(line).toContain('another stack running?');
        expect(line).toContain('--port-offset');
        expect(third.hasLine('Cordum is up.')).toBe(false);
      } finally {
        await new Promise<void>((r) => squatter.close(() => r()));
      }
      // the first stack is untouched: still serving, its logs not rotated away
      expect(first.running).toBe(true);
      expect((await fetch(`http://127.0.0.1:${8081 + offset}/readyz`)).status).toBe(200);
      expect(existsSync(join(logDirOf(offset), 'safety-kernel-1.log.1'))).toBe(false);
      expect(readFileSync(join(logDirOf(offset), 'safety-kernel-1.log'), 'utf8')).toContain('policy loaded');
    } finally {
      await Promise.all([second?.stop(), first.stop()]);
    }
  }, 180_000);

  it('a launcher killed with SIGKILL leaves its stack running; the next start names those processes instead of starting over them', async () => {
    const offset = takeOffset();
    const first = launch('npm-start-killed', ['--port-offset', String(offset)], servers);
    let again: ManagedProcess | undefined;
    try {
      await waitUp(first);
      const kids = track(descendantsOf(first.pid));
      first.kill('SIGKILL');
      await first.waitExit(30_000);
      expect(kids.filter(alive)).toEqual(kids); // own process groups: nothing took them down
      again = launch('npm-start-after-kill', ['--port-offset', String(offset)], servers);
      const line = await refusal(again, 1, 'a stack whose launcher was killed is still running');
      for (const pid of kids) expect(line).toContain(String(pid));
      expect(existsSync(join(repoRoot, `.cordum/stack-p${offset}.pids`))).toBe(true);
    } finally {
      killLeftovers();
      await again?.stop();
      await first.stop();
      rmSync(join(repoRoot, `.cordum/stack-p${offset}.pids`), { force: true });
    }
  }, 180_000);

  it('logs a stack with a port offset to .cordum/logs-p<offset>/ and moves the previous run to <name>.log.1', async () => {
    const offset = takeOffset();
    const dir = logDirOf(offset);
    const kernelLog = join(dir, 'safety-kernel-1.log');
    const first = launch('npm-start-logs-1', ['--port-offset', String(offset)], servers);
    let second: ManagedProcess | undefined;
    try {
      await waitUp(first);
      track(descendantsOf(first.pid));
      expect(first.hasLine(`logs in .cordum/logs-p${offset}/<name>.log`)).toBe(true);
      await logRecord(kernelLog, 'policy loaded');
      first.kill('SIGINT');
      expect((await first.waitExit(60_000)).code).toBe(0);
      const firstRun = readFileSync(kernelLog, 'utf8');
      expect(firstRun).toContain('policy loaded');

      second = launch('npm-start-logs-2', ['--port-offset', String(offset)], servers);
      await waitUp(second);
      track(descendantsOf(second.pid));
      await logRecord(kernelLog, 'policy loaded');
      expect(readFileSync(`${kernelLog}.1`, 'utf8')).toBe(firstRun);
      // the new file holds this run alone: not one line of the first run's
      expect(readFileSync(kernelLog, 'utf8')).not.toContain(firstRun.split('\n')[0]);
      for (const svc of ['scheduler-1', 'api-gateway-1', 'echo-worker-1']) expect(existsSync(join(dir, `${svc}.log.1`))).toBe(true);
    } finally {
      await Promise.all([first.stop(), second?.stop()]);
    }
  }, 180_000);

  it("points the services at the repository's config/*.yaml, unless the variable is set", async () => {
    const table = JSON.parse(readFileSync(join(repoRoot, 'tools/stack/services.json'), 'utf8')) as { services: { name: string; configFiles?: Record<string, string> }[] };
    const configFiles = Object.fromEntries(table.services.map((s) => [s.name, s.configFiles ?? {}]));
    expect(configFiles['safety-kernel']).toEqual({ SAFETY_POLICY_PATH: 'config/safety.yaml' });
    expect(configFiles['scheduler']).toEqual({ POOL_CONFIG_PATH: 'config/pools.yaml', TIMEOUT_CONFIG_PATH: 'config/timeouts.yaml' });
    // the names are the ones the services read
    for (const [svc, files] of Object.entries(configFiles)) {
      for (const envName of Object.keys(files)) expect(readFileSync(join(repoRoot, 'apps', svc, 'src/config.ts'), 'utf8')).toContain(`e.${envName}`);
    }

    const offset = takeOffset();
    const dir = logDirOf(offset);
    const first = launch('npm-start-config', ['--port-offset', String(offset)], servers);
    let second: ManagedProcess | undefined;
    const tmp = mkdtempSync(join(tmpdir(), 'npm-start-config-'));
    try {
      await waitUp(first);
      track(descendantsOf(first.pid));
      expect((await logRecord(join(dir, 'safety-kernel-1.log'), 'policy loaded'))['path']).toBe(join(repoRoot, 'config/safety.yaml'));
      const sched = await logRecord(join(dir, 'scheduler-1.log'), 'scheduler config');
      expect({ pools: sched['pools'], timeouts: sched['timeouts'] }).toEqual({ pools: join(repoRoot, 'config/pools.yaml'), timeouts: join(repoRoot, 'config/timeouts.yaml') });
      first.kill('SIGINT');
      expect((await first.waitExit(60_000)).code).toBe(0);

      // a path the user set wins
      const own = join(tmp, 'my-safety.yaml');
      copyFileSync(join(repoRoot, 'config/safety.yaml'), own);
      second = launch('npm-start-config-own', ['--port-offset', String(offset)], { ...servers, SAFETY_POLICY_PATH: own });
      await waitUp(second);
      track(descendantsOf(second.pid));
      expect((await logRecord(join(dir, 'safety-kernel-1.log'), 'policy loaded'))['path']).toBe(own);
    } finally {
      await Promise.all([first.stop(), second?.stop()]);
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 180_000);

  it.each([
    ['REDIS_URL', { REDIS_URL: 'localhost:11379' }, 'redis://host:port'],
    ['REDIS_URL', { REDIS_URL: 'http://127.0.0.1:6379' }, 'redis://host:port'],
    ['NATS_URL', { NATS_URL: 'nats://127.0.0.1:4222,127.0.0.1:4223' }, 'nats://host:port'],
    ['REDIS_CLUSTER_ADDRESSES', { REDIS_CLUSTER_ADDRESSES: '127.0.0.1:7000,127.0.0.1' }, 'host:port'],
  ])('rejects a malformed %s (%j) with one line naming it, before probing or starting anything', async (name, env, form) => {
    const offset = takeOffset();
    const p = launch(`npm-start-bad-${name}`, ['--port-offset', String(offset)], { ...servers, ...env });
    try {
      expect(await refusal(p, 2, `${name}=`, 20_000)).toContain(form);
      expect(p.output.filter((l) => /^(redis|nats): /.test(l))).toEqual([]);
    } finally {
      await p.stop();
    }
  });

  it('a server binary missing from PATH stops the start at once with one line saying so (P323: it waited 15 s and printed spawn ENOENT)', async () => {
    // PATH with node, npm, npx and redis-server but no nats-server (Debian puts it in /usr/sbin,
    // which a normal user's PATH lacks); NATS not running where NATS_URL points.
    const bin = mkdtempSync(join(tmpdir(), 'npm-start-path-'));
    for (const tool of ['node', 'npm', 'npx', 'redis-server']) {
      const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
      if (found) symlinkSync(found, join(bin, tool));
    }
    const offset = takeOffset();
    const started = Date.now();
    const p = launch('npm-start-no-nats-server', ['--port-offset', String(offset)], { ...servers, NATS_URL: `nats://127.0.0.1:${await freePort()}`, PATH: bin });
    try {
      expect(await refusal(p, 1, 'nats-server not found on PATH', 20_000)).toMatch(/nats is not running at 127\.0\.0\.1:\d+ and npm start cannot start one: nats-server not found on PATH/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await p.stop();
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it.each([
    ['REDIS_URL', 'redis://:hunter2@myredis:99999', 'REDIS_URL="redis://:<redacted>@myredis:99999"', 'hunter2'],
    ['NATS_URL', 'nats://cordum:s3cret@127.0.0.1:99999', 'NATS_URL="nats://cordum:<redacted>@127.0.0.1:99999"', 's3cret'],
    ['NATS_URL', 'nats://t0ken@127.0.0.1:99999', 'NATS_URL="nats://<redacted>@127.0.0.1:99999"', 't0ken'],
    ['REDIS_CLUSTER_ADDRESSES', 'rediss://:hunter2@10.0.0.1:7000,10.0.0.2', 'REDIS_CLUSTER_ADDRESSES="rediss://:<redacted>@10.0.0.1:7000,10.0.0.2"', 'hunter2'],
    // P299: a comma in the password ended the redaction
    ['REDIS_URL', 'redis://:hun,ter2@myredis:99999', 'REDIS_URL="redis://:<redacted>@myredis:99999"', 'ter2'],
  ])('never prints the password of a malformed %s (%s)', async (name, value, shown, secret) => {
    const p = launch(`npm-start-secret-${name}`, ['--port-offset', String(takeOffset())], { ...servers, [name]: value });
    try {
      expect(await refusal(p, 2, shown, 20_000)).not.toContain(secret);
      expect(p.output.join('\n')).not.toContain(secret);
    } finally {
      await p.stop();
    }
  });

  it('refuses a reused NATS without JetStream with one line naming the fix, before any service starts', async () => {
    const port = await freePort();
    const plain = startProcess(`nats-no-jetstream:${port}`, 'nats-server', ['-a', '127.0.0.1', '-p', String(port)]); // no -js
    try {
      await waitFor(() => canConnect(port), 10_000, { message: `nats-server without JetStream on ${port}` });
      const offset = takeOffset();
      const p = launch('npm-start-no-jetstream', ['--port-offset', String(offset)], { ...servers, NATS_URL: `nats://127.0.0.1:${port}` });
      try {
        const line = await refusal(p, 2, `NATS at 127.0.0.1:${port} has no JetStream`);
        expect(line).toContain('restart that nats-server with -js');
        expect(line.length).toBeLessThan(300); // one line, not the services' logs
        expect(p.hasLine(/^nats: reusing/)).toBe(false);
        expect(p.hasLine('Cordum is up.')).toBe(false);
        expect(existsSync(join(logDirOf(offset), 'safety-kernel-1.log'))).toBe(false);
      } finally {
        await p.stop();
      }
    } finally {
      await plain.stop(5_000);
    }
  });

  it('on a fresh clone (no node_modules) names the install command in one line, before building anything', async () => {
    // The launcher's root is the directory two levels above it: a copy in an empty tree is a clone
    // before `npm install` (and before a build: no dist/ either).
    const clone = mkdtempSync(join(tmpdir(), 'npm-start-fresh-clone-'));
    try {
      mkdirSync(join(clone, 'tools/stack'), { recursive: true });
      for (const f of readdirSync(join(repoRoot, 'tools/stack'))) copyFileSync(join(repoRoot, 'tools/stack', f), join(clone, 'tools/stack', f));
      const p = launch('npm-start-fresh-clone', [], servers, [process.execPath, join(clone, 'tools/stack/start.mjs')]);
      try {
        await refusal(p, 2, 'dependencies are not installed; run npm install --no-audit --no-fund first', 60_000);
        expect(p.output.filter((l) => /^(building|redis: |nats: )/.test(l))).toEqual([]);
        expect(existsSync(join(clone, '.cordum'))).toBe(false);
      } finally {
        await p.stop();
      }
    } finally {
      rmSync(clone, { recursive: true, force: true });
    }
  });

  it('refuses a known service that is not built in this repository before building or starting anything', async () => {
    const offset = takeOffset();
    const p = launch('npm-start-not-built', ['--replicas', 'workflow-engine=1', '--port-offset', String(offset)], servers);
    try {
      await refusal(p, 2, 'workflow-engine is not built yet in this repository', 20_000);
      expect(p.output.filter((l) => /^(building|redis: |nats: )/.test(l))).toEqual([]);
    } finally {
      await p.stop();
    }
  });

  it('a service that never gets ready: its failing checks and first warning, no stack trace, everything stopped (P209)', async () => {
    // An operator's likely slip: the URL of a Redis that wants a password, without it.
    const locked = await startRedis({ password: 'npm-start-pw' });
    try {
      const offset = takeOffset();
      const p = launch('npm-start-not-ready', ['--port-offset', String(offset), '--ready-timeout', '5'], { ...servers, REDIS_URL: `redis://127.0.0.1:${locked.port}` });
      try {
        expect((await p.waitExit(90_000)).code).toBe(1);
        const err = p.errOutput.join('\n');
        expect(err).toContain('npm start: safety-kernel not ready within 5 s');
        expect(err).toMatch(/safety-kernel-1: failing checks [^;]*redis/);
        expect(err).toMatch(/first warning: redis refused the credentials in REDIS_URL: NOAUTH/);
        expect(err).toContain(`(logs in .cordum/logs-p${offset}/)`);
        expect(err).not.toMatch(/\bat (waitUntil|main|async)\b/);
        expect(p.hasLine('Cordum is up.')).toBe(false);
        expect(p.hasLine('stopped')).toBe(true);
      } finally {
        await p.stop();
      }
    } finally {
      await locked.stop();
    }
  }, 120_000);

  it('prints the whole help, every option included, ending with a newline', () => {
    const r = spawnSync(process.execPath, [launcherPath, '--help'], { cwd: repoRoot, encoding: 'utf8' });
    expect(r.status).toBe(0);
    for (const opt of ['--replicas', '--port-offset', '--build', '--ready-timeout', '--help']) expect(r.stdout).toContain(opt);
    expect(r.stdout).toContain('.cordum/stack.pids');
    // The whole text: its last sentence, complete, then a newline.
    expect(r.stdout.endsWith('a start over a stack still running\nnames them.\n')).toBe(true);
  });

  it('rejects a bad flag with one readable line', async () => {
    const p = startProcess('npm-start-bad', process.execPath, [launcherPath, '--replicas', 'scheduler=9']);
    await refusal(p, 2, 'scheduler=9', 10_000);
  });
});
