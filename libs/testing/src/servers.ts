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

/** A throwaway redis-server on a free loopback port, nothing persisted. */
export async function startRedis(opts: { args?: string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'cordum-redis-'));
  const proc = startProcess(`redis:${port}`, 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(opts.args ?? []),
  ]);
  await waitFor(async () => !proc.running ? Promise.reject(new Error(`redis-server exited: ${proc.logs()}`)) : canConnect(port), 10_000, { message: 'redis-server start' });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A throwaway nats-server with JetStream on a free loopback port. */
export async function startNats(opts: { args?: string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'cordum-nats-'));
  const proc = startProcess(`nats:${port}`, 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...(opts.args ?? [])]);
  await waitFor(async () => !proc.running ? Promise.reject(new Error(`nats-server exited: ${proc.logs()}`)) : canConnect(port), 10_000, { message: 'nats-server start' });
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    process: proc,
    dir,
    stop: async () => {
      await proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

