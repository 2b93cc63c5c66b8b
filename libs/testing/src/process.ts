import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { within } from './wait';

export const repoRoot = resolve(__dirname, '../../..');

/** A child process with its combined output kept for assertions and debugging. */
export class ManagedProcess {
  /** stdout and stderr lines, interleaved as they arrived. */
  readonly output: string[] = [];
  /** stderr lines alone (config errors must be one readable line there). */
  readonly errOutput: string[] = [];
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private endRequested = false;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    const keep = (buf: Buffer) => {
      for (const line of buf.toString('utf8').split('\n')) if (line.length) this.output.push(line);
      if (this.output.length > 5000) this.output.splice(0, this.output.length - 5000);
      if (process.env['CORDUM_TEST_VERBOSE']) process.stderr.write(`[${name}] ${buf.toString('utf8')}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', (buf: Buffer) => {
      keep(buf);
      for (const line of buf.toString('utf8').split('\n')) if (line.length) this.errOutput.push(line);
    });
    this.exited = new Promise((res) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        res(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  get exit(): { code: number | null; signal: NodeJS.Signals | null } | null {
    return this.exitInfo;
  }

  /** True once the test asked it to end (kill with any signal but SIGSTOP/SIGCONT, or stop()). */
  get stopRequested(): boolean {
    return this.endRequested;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') this.endRequested = true;
    if (this.exitInfo === null) this.child.kill(signal);
  }

  /**
   * SIGSTOP, resolved once every thread of the process is stopped. kill() returns when the signal
   * is queued, not when it has acted: on a loaded machine a nats-server answered a PING sent right
   * after kill('SIGSTOP') in 16 of 40 tries, so a test that means "frozen" must wait for this.
   */
  async freeze(timeoutMs = 5_000): Promise<void> {
    this.kill('SIGSTOP');
    const deadline = Date.now() + timeoutMs;
    while (!allThreadsStopped(this.pid)) {
      if (this.exitInfo !== null) throw new Error(`${this.name} exited while being frozen`);
      if (Date.now() > deadline) throw new Error(`${this.name} (pid ${this.pid}) not stopped ${timeoutMs} ms after SIGSTOP`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** SIGCONT: undoes freeze(). */
  thaw(): void {
    this.kill('SIGCONT');
  }

  /** Resolves with the exit once the process has ended, or rejects after timeoutMs. */
  waitExit(timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return within(this.exited, timeoutMs, `${this.name} did not exit within ${timeoutMs} ms`);
  }

  /** SIGTERM, then SIGKILL after graceMs. Safe to call twice. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.exitInfo !== null) return;
    this.endRequested = true;
    this.child.kill('SIGTERM');
    try {
      await this.waitExit(graceMs);
    } catch {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  logs(): string {
    return this.output.join('\n');
  }

  hasLine(re: RegExp | string): boolean {
    return this.output.some((l) => (typeof re === 'string' ? l.includes(re) : re.test(l)));
  }
}

/** True when every thread of `pid` is in the stopped state (`T`, or `t` under a tracer) by /proc. */
function allThreadsStopped(pid: number): boolean {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return false;
  }
  return tasks.every((t) => {
    try {
      // The state follows the command name, which is in parentheses and may itself hold spaces.
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state === 'T' || state === 't';
    } catch {
      return true; // the thread ended meanwhile
    }
  });
}

/**
 * The variables our services read (and the launcher passes on): a test's child gets only those
 * the test sets. Inherited from the shell that runs jest (a developer's `export
 * REDIS_CLUSTER_ADDRESSES=…` for `npm start`, which wins over REDIS_URL), they pointed test
 * services at the developer's servers and files (P167).
 */
export const SERVICE_ENV_RE = /^(REDIS_|NATS_|CORDUM_|SAFETY_|SCHEDULER_|GATEWAY_|WORKER_|AUDIT_|CAP_|API_|RATE_LIMIT|DLQ_|JOB_TTL$|TENANT_ID$|POOL_CONFIG_PATH$|TIMEOUT_CONFIG_PATH$)/;

/** process.env without SERVICE_ENV_RE's variables, then `env` (what the test sets) on top. */
export function childEnv(env: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const inherited: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!SERVICE_ENV_RE.test(k)) inherited[k] = v;
  return { ...inherited, ...env };
}

export function startProcess(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = repoRoot): ManagedProcess {
  const child = spawn(cmd, args, { cwd, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  return new ManagedProcess(name, child);
}

/** Path of a built service bundle; throws a readable error when `npm run build` was not run. */
export function serviceBundle(service: string): string {
  const p = join(repoRoot, 'dist/apps', service, 'main.js');
  if (!existsSync(p)) throw new Error(`${p} is missing: run "npm run build" before the integration tests`);
  return p;
}

/** Spawns `node dist/apps/<service>/main.js` with the given env (from the repo root unless cwd is given). */
export function spawnService(service: string, env: Record<string, string>, opts: { cwd?: string; name?: string } = {}): ManagedProcess {
  return startProcess(opts.name ?? service, process.execPath, [serviceBundle(service)], env, opts.cwd ?? repoRoot);
}

export async function stopAll(procs: Iterable<ManagedProcess | undefined>): Promise<void> {
  await Promise.all([...procs].map((p) => (p ? p.stop() : Promise.resolve())));
}

export { once };
