// Bus.flush() resolves only when every message published before it reached the server (P158).
// nats.js empties its send buffer at every connection attempt of a reconnect, from an I/O
// callback (the DNS answer for a hostname URL, as in k8s). flush() defers its PING to the end of
// the event-loop turn (one PING for every flush of the turn, issue 7): a publish made in that
// turn before the attempt was thrown away, yet the PING went to the new connection and its PONG
// resolved the flush, so the scheduler marked a JobRequest published that NATS never saw.
// Here an I/O callback publishes and flushes on every turn, as the scheduler's Redis replies do,
// while a loopback proxy in front of the server drops the connection 5 times (the server stays
// up, so whatever reached it is in the stream that records it).
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connect, type NatsConnection } from 'nats';
import type { Bus } from '../src';
import { bus, dec, enc } from './helpers';

const ROUNDS = 5;

let server: TestServer;
let proxy: Server;
const proxied = new Set<Socket>();

beforeAll(async () => {
  server = await startNats();
  const admin: NatsConnection = await connect({ servers: server.url });
  await (await admin.jetstreamManager()).streams.add({ name: 'PROBE', subjects: ['probe.>'] });
  await admin.close();
  proxy = createServer((down) => {
    const up = tcpConnect(server.port, '127.0.0.1');
    for (const [a, b] of [[down, up], [up, down]] as const) {
      proxied.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        proxied.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
});

afterAll(async () => {
  for (const s of proxied) s.destroy();
  await new Promise((r) => proxy?.close(r));
  await server?.stop();
});

/** The seq of the newest `probe.<seq>` message in the PROBE stream (0 when none). */
async function newestStored(): Promise<number> {
  const nc = await connect({ servers: server.url });
  try {
    const jsm = await nc.jetstreamManager();
    const { last_seq: s, messages } = (await jsm.streams.info('PROBE')).state;
    return messages === 0 ? 0 : Number(dec((await jsm.streams.getMessage('PROBE', { seq: s })).data));
  } finally {
    await nc.close();
  }
}

/** Seqs of the `probe.<seq>` messages the PROBE stream holds. */
async function stored(): Promise<Set<number>> {
  const nc = await connect({ servers: server.url });
  try {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info('PROBE');
    const seqs = new Set<number>();
    for (let s = info.state.first_seq; s <= info.state.last_seq; s++) seqs.add(Number(dec((await jsm.streams.getMessage('PROBE', { seq: s })).data)));
    return seqs;
  } finally {
    await nc.close();
  }
}

test(`a flush that resolves proves its publishes reached the server, across ${ROUNDS} dropped connections to a hostname URL (P158)`, async () => {
  const b: Bus = await bus(`nats://localhost:${(proxy.address() as AddressInfo).port}`, 'flush-reconnect');
  const resolved = new Set<number>();
  const rejected = new Set<number>();
  let seq = 0;
  let newestResolved = 0;
  let running = true;
  // A TCP echo: every turn of the event loop runs one I/O callback that publishes and flushes.
  const echo: Server = createServer((s) => s.on('data', (d) => s.write(d)));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const client: Socket = tcpConnect((echo.address() as AddressInfo).port, '127.0.0.1');
  client.on('data', () => {
    if (!running) return;
    const n = ++seq;
    try {
      b.publishCore(`probe.${n}`, enc(String(n)));
      b.flush().then(
        () => {
          resolved.add(n);
          newestResolved = Math.max(newestResolved, n);
        },
        () => rejected.add(n),
      );
    } catch {
      rejected.add(n);
    }
    client.write('x');
  });
  client.write('x');
  try {
    await waitFor(() => resolved.size >= 200, 10_000, { message: 'flushes before the first drop' });
    const firstDrop = seq;
    for (let round = 0; round < ROUNDS; round++) {
      const before = proxied.size;
      expect(before).toBeGreaterThan(0);
      for (const sock of proxied) sock.destroy();
      const after = seq;
      await waitFor(() => newestResolved > after + 200, 20_000, { message: `flushes after reconnect ${round + 1}` });
    }
    running = false;
    // The last message is in the stream, so every one the server got before it is too.
    const last = seq + 1;
    b.publishCore(`probe.${last}`, enc(String(last)));
    await b.flush();
    await waitFor(async () => (await newestStored()) === last, 10_000, { message: 'the last message stored' });
    const onServer = await stored();
    const lost = [...resolved].filter((n) => !onServer.has(n)).sort((x, y) => x - y);
    expect({ lost: lost.slice(0, 10), count: lost.length }).toEqual({ lost: [], count: 0 });
    // The outage was real: flushes during it failed, and some after each drop resolved and were
    // checked (each round waited for one; how many depends on the machine's load).
    expect(rejected.size).toBeGreaterThan(0);
    expect([...resolved].filter((n) => n > firstDrop).length).toBeGreaterThanOrEqual(ROUNDS);
  } finally {
    running = false;
    client.destroy();
    await new Promise((r) => echo.close(r));
    await b.close();
  }
}, 180_000);
