import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess, type ManagedProcess } from './process';
import { waitFor } from './wait';

/** Resolves true when something accepts TCP connections on host:port. */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface TestServer {
  port: number;
  url: string;
  process: ManagedProcess;
  dir: string;
  stop(): Promise<void>;
}

/** The process of a test server exited before it listened (a port taken between probe and bind, say). */
export class ServerExitedError extends Error {}

/**
 * Waits until `port` accepts connections. A process that exits first fails it at once, with its
 * log (ServerExitedError), not at the timeout; a timeout also carries the log.
 */
export async function waitListening(proc: ManagedProcess, port: number, what: string, timeoutMs = 10_000): Promise<void> {
  const up = await waitFor(async () => (!proc.running ? 'exited' : (await canConnect(port)) ? 'up' : null), timeoutMs, { message: `${what} on ${port}` }).catch((e: unknown) => {
    throw new Error(`${e instanceof Error ? e.message : String(e)}: ${proc.logs()}`);
  });
  if (up === 'exited') throw new ServerExitedError(`${what} on ${port} exited: ${proc.logs()}`);
}

/** A started server whose `stop` ends the process and removes its data dir. */
export function testServer(scheme: string, port: number, proc: ManagedProcess, dir: string): TestServer {
  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts `cmd` with `args(port, dir)` on a free port and waits for it to listen; stopped again if it does not. */
async function startServer(kind: 'redis' | 'nats', cmd: string, args: (port: number, dir: string) => string[]): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `cordum-${kind}-`));
  const proc = startProcess(`${kind}:${port}`, cmd, args(port, dir));
  return whenListening(testServer(kind, port, proc, dir), cmd);
}

/** Waits for a just-started server to listen; one that does not is stopped (data dir removed) and the error rethrown. */
async function whenListening(server: TestServer, what: string): Promise<TestServer> {
  try {
    await waitListening(server.process, server.port, what);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/** A throwaway redis-server on a free loopback port, nothing persisted. */
export function startRedis(opts: { args?: string[] } = {}): Promise<TestServer> {
  return startServer('redis', 'redis-server', (port, dir) => [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(opts.args ?? []),
  ]);
}

const natsArgs = (port: number, dir: string, extra: string[] = []): string[] => ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...extra];

/** A throwaway nats-server with JetStream on a free loopback port. */
export function startNats(opts: { args?: string[] } = {}): Promise<TestServer> {
  return startServer('nats', 'nats-server', (port, dir) => natsArgs(port, dir, opts.args));
}

/**
 * Starts nats-server again on a stopped server's port and JetStream store, as a restart with
 * persistent storage does, and waits for it to listen. The old process must have ended; the
 * returned server's `stop` ends the new one and removes the store.
 */
export async function restartNats(server: TestServer, opts: { args?: string[] } = {}): Promise<TestServer> {
  if (server.process.running) throw new Error(`restartNats: nats-server on ${server.port} is still running`);
  const proc = startProcess(`nats:${server.port}`, 'nats-server', natsArgs(server.port, server.dir, opts.args));
  return whenListening(testServer('nats', server.port, proc, server.dir), 'nats-server (restarted)');
}
