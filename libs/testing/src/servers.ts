import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess, type ManagedProcess } from './process';
import type { TestTls } from './tls';
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
  /**
   * Once the process has ended (a test's SIGKILL, say): starts the server again on the same port
   * and data dir, as a restart does, and waits for it to listen. The returned server replaces
   * this one (its `stop` ends the new process). A nats-server keeps its JetStream store; a
   * redis-server from startRedis comes back empty, since it persists nothing.
   */
  restart(): Promise<TestServer>;
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

/**
 * A server started by `launch` (now, and again by `restart`), whose `stop` ends the process and
 * removes its data dir.
 */
export function testServer(scheme: string, port: number, dir: string, launch: () => ManagedProcess, userinfo = ''): TestServer {
  const proc = launch();
  return {
    port,
    url: `${scheme}://${userinfo}127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
    restart: async () => {
      if (proc.running) throw new Error(`restart: ${proc.name} is still running`);
      return whenListening(testServer(scheme, port, dir, launch, userinfo), `${proc.name} (restarted)`);
    },
  };
}

/** Starts `cmd` with `args(port, dir)` on a free port and waits for it to listen; stopped again if it does not. */
async function startServer(kind: 'redis' | 'nats', cmd: string, args: (port: number, dir: string) => string[], userinfo = '', scheme: string = kind): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `cordum-${kind}-`));
  return whenListening(testServer(scheme, port, dir, () => startProcess(`${kind}:${port}`, cmd, args(port, dir)), userinfo), cmd);
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

/** TLS for a test redis-server: its certificate (`tls`'s server certificate, IP:127.0.0.1) and whether it requires client certificates. */
export interface RedisTlsServerOptions {
  tls: TestTls;
  /** `tls-auth-clients yes`: only clients with a certificate from the CA get in (default: optional). */
  verifyClients?: boolean;
}

/**
 * A throwaway redis-server on a free loopback port, nothing persisted. With `password`, it
 * requires it (`requirepass`), a replica sends it to its master (`masterauth`), and `url` carries
 * it (`redis://:<password>@127.0.0.1:<port>`; letters, digits and dashes need no escaping). With
 * `tls`, the port speaks TLS only (`tls-port`; the cluster bus and replication too) and `url` is
 * `rediss://`.
 */
export function startRedis(opts: { args?: string[]; password?: string; tls?: RedisTlsServerOptions } = {}): Promise<TestServer> {
  const auth = opts.password === undefined ? [] : ['--requirepass', opts.password, '--masterauth', opts.password];
  const t = opts.tls;
  const ports = (port: number): string[] =>
    t === undefined
      ? ['--port', String(port)]
      : ['--port', '0', '--tls-port', String(port), '--tls-cert-file', t.tls.serverCertFile, '--tls-key-file', t.tls.serverKeyFile, '--tls-ca-cert-file', t.tls.caFile,
          '--tls-auth-clients', t.verifyClients ? 'yes' : 'optional', '--tls-replication', 'yes', '--tls-cluster', 'yes',
          // what a replica or a cluster peer presents when it connects to another node, which
          // verifies it (the server certificate is for serverAuth only: the bus never formed)
          '--tls-client-cert-file', t.tls.clientCertFile, '--tls-client-key-file', t.tls.clientKeyFile];
  return startServer('redis', 'redis-server', (port, dir) => [
    ...ports(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...auth, ...(opts.args ?? []),
  ], opts.password === undefined ? '' : `:${encodeURIComponent(opts.password)}@`, t === undefined ? 'redis' : 'rediss');
}

/** A throwaway nats-server with JetStream on a free loopback port. */
export function startNats(opts: { args?: string[] } = {}): Promise<TestServer> {
  return startServer('nats', 'nats-server', (port, dir) => ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...(opts.args ?? [])]);
}
