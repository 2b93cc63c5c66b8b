import { Socket } from 'node:net';
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connect, type NatsConnection, type Subscription } from 'nats';
import { flushOncePerTurn } from '../src/flush';
import { bus, dec, enc } from './helpers';

/** Socket writes this process makes to `port` while installed (every client write goes through Socket#write). */
function writeCounter(port: number): { count: () => number; restore: () => void } {
  const original = Socket.prototype.write;
  let n = 0;
  Socket.prototype.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    if (this.remotePort === port) n += 1;
    return original.apply(this, args);
  } as Socket['write'];
  return { count: () => n, restore: () => void (Socket.prototype.write = original) };
}

/** Resolves after the turn that runs the callbacks queued now with setImmediate, and the one after it. */
const twoTurns = (): Promise<void> => new Promise((r) => setImmediate(() => setImmediate(r)));

describe('flushOncePerTurn', () => {
  let server: TestServer;
  let patched: NatsConnection;
  let plain: NatsConnection;
  let listener: NatsConnection;

  beforeAll(async () => {
    server = await startNats();
    [patched, plain, listener] = await Promise.all([connect({ servers: server.url }), connect({ servers: server.url }), connect({ servers: server.url })]);
    expect(flushOncePerTurn(patched)).toBe(true);
  });

  afterAll(async () => {
    await Promise.all([patched, plain, listener].map((nc) => nc?.close()));
    await server?.stop();
  });

  /** Publishes from three separate callbacks of one event-loop turn; returns the socket writes it took. */
  async function writesForThreeCallbacks(nc: NatsConnection, subject: string): Promise<number> {
    await nc.flush();
    const w = writeCounter(server.port);
    try {
      for (let i = 0; i < 3; i++) setImmediate(() => nc.publish(subject, enc(`m${i}`)));
      await twoTurns();
      return w.count();
    } finally {
      w.restore();
    }
  }

  it('sends what the callbacks of one turn publish in one write (nats.js alone writes once per callback)', async () => {
    const got: string[] = [];
    const sub = listener.subscribe('flush.turn', { callback: (_e, m) => got.push(dec(m.data)) });
    await listener.flush();
    expect(await writesForThreeCallbacks(plain, 'flush.turn')).toBe(3);
    expect(await writesForThreeCallbacks(patched, 'flush.turn')).toBe(1);
    await waitFor(() => got.length === 6, 5_000, { message: 'six messages' });
    expect(got).toEqual(['m0', 'm1', 'm2', 'm0', 'm1', 'm2']);
    sub.unsubscribe();
  });

  it('keeps order over many turns and many messages', async () => {
    const got: number[] = [];
    const sub: Subscription = listener.subscribe('flush.order', { callback: (_e, m) => got.push(Number(dec(m.data))) });
    await listener.flush();
    const n = 5_000;
    for (let i = 0; i < n; i++) {
      patched.publish('flush.order', enc(String(i)));
      if (i % 97 === 0) await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => got.length === n, 10_000, { message: `${n} messages` });
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i));
    sub.unsubscribe();
  });

  it('still writes at once when the buffer reaches its limit', async () => {
    await patched.flush();
    const big = new Uint8Array(128 * 1024); // above nats.js's pendingLimit (32 KiB)
    const w = writeCounter(server.port);
    try {
      patched.publish('flush.big', big);
      expect(w.count()).toBe(1);
    } finally {
      w.restore();
    }
  });

  it('is what connectBus gives every connection, and request/reply works through it', async () => {
    const b = await bus(server.url, 'flush-bus');
    try {
      const nc = (b as unknown as { nc: NatsConnection }).nc;
      expect(await writesForThreeCallbacks(nc, 'flush.bus')).toBe(1);
      const sub = listener.subscribe('flush.req', { callback: (_e, m) => m.respond(enc(`re:${dec(m.data)}`)) });
      await listener.flush();
      const reply = await nc.request('flush.req', enc('x'), { timeout: 2_000 });
      expect(dec(reply.data)).toBe('re:x');
      sub.unsubscribe();
    } finally {
      await b.close();
    }
  });

  it('close() right after a publish still sends it', async () => {
    const got: string[] = [];
    const sub = listener.subscribe('flush.close', { callback: (_e, m) => got.push(dec(m.data)) });
    await listener.flush();
    const nc = await connect({ servers: server.url });
    expect(flushOncePerTurn(nc)).toBe(true);
    nc.publish('flush.close', enc('last words'));
    await nc.close();
    await waitFor(() => got.length === 1, 5_000, { message: 'the message published before close' });
    expect(got).toEqual(['last words']);
    sub.unsubscribe();
  });

  it('changes nothing and returns false when the connection is not the nats.js it was written for', () => {
    const sendCommand = (): undefined => undefined;
    const protocol = { sendCommand };
    const odd = { protocol } as unknown as NatsConnection;
    expect(flushOncePerTurn(odd)).toBe(false);
    expect(protocol.sendCommand).toBe(sendCommand);
    expect(Object.keys(protocol)).toEqual(['sendCommand']);
  });
});
