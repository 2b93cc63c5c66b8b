// A nats-server without JetStream (started without -js, or an account without it): connectBus
// fails with one message that names the cause and the fix, which is what a service's
// "failed to start" log line then says, not nats.js's bare "503" with its stack.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canConnect, freePort, startProcess, waitFor, type ManagedProcess } from '@cordum/testing';
import { isBusError } from '../src';
import { bus } from './helpers';

/** A nats-server with `args` (no -js unless they say so) on a free port, once it listens. */
async function plainNats(args: (port: number) => string[]): Promise<{ port: number; proc: ManagedProcess }> {
  const port = await freePort();
  const proc = startProcess(`nats-nojs:${port}`, 'nats-server', args(port));
  try {
    await waitFor(async () => !proc.running || (await canConnect(port)), 10_000, { message: `nats-server on ${port}` });
    if (!proc.running) throw new Error(`nats-server on ${port} exited: ${proc.logs()}`);
  } catch (err) {
    await proc.stop(5_000);
    throw err;
  }
  return { port, proc };
}

async function connectError(url: string): Promise<Error> {
  const err = await bus(url, 'bus-nojs').then(
    async (b) => {
      await b.close();
      return new Error('connectBus succeeded');
    },
    (e: unknown) => e as Error,
  );
  return err;
}

describe('@cordum/bus against a NATS without JetStream', () => {
  it('a nats-server started without -js: one message naming the cause and the fix', async () => {
    const { port, proc } = await plainNats((p) => ['-a', '127.0.0.1', '-p', String(p)]);
    try {
      const err = await connectError(`nats://127.0.0.1:${port}`);
      expect(isBusError(err, 'bus_connect_failed')).toBe(true);
      expect(err.message).toBe(`NATS at 127.0.0.1:${port} has no JetStream (start nats-server with -js)`);
      // The message says it all: no nats.js "503" (and its stack) as the cause.
      expect(err.cause).toBeUndefined();
    } finally {
      await proc.stop(5_000);
    }
  });

  it('a nats-server with JetStream, but not for the account connecting: names the account as the cause', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-nats-acct-'));
    const conf = join(dir, 'nats.conf');
    let server: { port: number; proc: ManagedProcess } | undefined;
    try {
      server = await plainNats((p) => {
        writeFileSync(conf, `listen: "127.0.0.1:${p}"\njetstream { store_dir: "${join(dir, 'js')}" }\naccounts { A: { users: [{ user: a, password: b }] } }\nno_auth_user: a\n`);
        return ['-c', conf];
      });
      // no_auth_user: a connection without credentials is user a, of account A, which has no JetStream
      const err = await connectError(`nats://127.0.0.1:${server.port}`);
      expect(isBusError(err, 'bus_connect_failed')).toBe(true);
      expect(err.message).toBe(`NATS at 127.0.0.1:${server.port} has no JetStream for this connection's account (enable jetstream for the account in the nats-server config)`);
      expect(err.cause).toBeUndefined();
    } finally {
      await server?.proc.stop(5_000);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
