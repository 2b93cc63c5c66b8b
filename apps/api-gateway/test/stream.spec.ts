// WebSocket GET /api/v1/stream (CONTRACT §2, D31) on two gateway replicas:
// tenant-scoped, ordered events from the bus; subprotocol auth; a client that
// stops reading is closed with 4008 while the gateway's heap stays bounded.
import { readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket from 'ws';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { JobProgressSchema, JobStatus, SystemAlertSchema, create, encodePacket, newPacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { KEYS, call, metric } from './harness';
import { startReplicas, type Replicas } from './replicas';
import { openStream, type StreamClient } from './stream-client';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let r: Replicas;
let bus: Bus;
const sockets: WebSocket[] = [];

beforeAll(async () => {
  r = await startReplicas(2);
  bus = await connectBus({ servers: [r.nats.url], name: 'stream-test', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
});

afterAll(async () => {
  for (const s of sockets) s.terminate();
  await bus.close();
  await r.stop();
});

const wsUrl = (i: number) => r.urls[i]!.replace('http://', 'ws://') + '/api/v1/stream';

type Client = StreamClient;

const open = (i: number, opts: { headers?: Record<string, string>; protocols?: string[] }, url = wsUrl(i)): Promise<Client> => openStream(url, opts, sockets);

function publishState(jobId: string, state: string) {
  const p = create(JobProgressSchema, { jobId, status: JobStatus.RUNNING, message: state });
  bus.publishCore(subjects.state, encodePacket(newPacket('scheduler-test', { case: 'jobProgress', value: p })));
}

function publishAlert(tenant: string, message: string, subject: string = subjects.alert, via: Bus = bus) {
  const a = create(SystemAlertSchema, { level: 'WARN', message, component: 'test', code: 'x', details: { tenant_id: tenant } });
  via.publishCore(subject, encodePacket(newPacket('test', { case: 'alert', value: a })));
}

it('two tenants on two replicas each see only their own job events, in order', async () => {
  const a = await open(0, { headers: { 'X-API-Key': KEYS.operator } }); // acme via headers on gw-1
  const b = await open(1, { protocols: ['cordum-api-key', Buffer.from(KEYS.globex).toString('base64url')] }); // globex via subprotocol on gw-2
  expect(b.ws.protocol).toBe('cordum-api-key');
  await waitFor(() => a.events.length > 0 && b.events.length > 0, 5_000, { message: 'hello frames' });
  expect(a.events[0]).toEqual({ type: 'hello', tenant: 'acme' });
  expect(b.events[0]).toEqual({ type: 'hello', tenant: 'globex' });

  // Jobs created through the *other* replica: the tenant is learned from the record.
  const ja = (await call(r.urls[1]!, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'a', topic: 'job.echo' } })).body['job_id'] as string;
  const jb = (await call(r.urls[0]!, 'POST', '/api/v1/jobs', { key: KEYS.globex, body: { prompt: 'b', topic: 'job.echo' } })).body['job_id'] as string;
  const seq = ['SCHEDULED', 'DISPATCHED', 'RUNNING', 'SUCCEEDED'];
  for (const s of seq) {
    publishState(jb, s);
    publishState(ja, s);
  }
  const prog = create(JobProgressSchema, { jobId: ja, percent: 50, message: 'half', status: JobStatus.RUNNING });
  bus.publishCore(subjects.progress, encodePacket(newPacket('w', { case: 'jobProgress', value: prog })));
  publishAlert('globex', 'for globex');
  publishAlert('acme', 'wf for acme', subjects.workflowEvent);
  await bus.flush();

  const statesOf = (c: Client, id: string) => c.events.filter((e) => e['type'] === 'job.state' && e['job_id'] === id).map((e) => e['state']);
  await waitFor(() => a.events.some((e) => e['type'] === 'workflow.event') && b.events.some((e) => e['type'] === 'alert'), 5_000, { message: 'all events' });
  expect(statesOf(a, ja)).toEqual(['PENDING', ...seq]);
  expect(statesOf(b, jb)).toEqual(['PENDING', ...seq]);
  expect(a.events.filter((e) => e['type'] !== 'hello').every((e) => e['tenant'] === 'acme')).toBe(true);
  expect(b.events.filter((e) => e['type'] !== 'hello').every((e) => e['tenant'] === 'globex')).toBe(true);
  expect(JSON.stringify(a.events)).not.toContain(jb);
  expect(JSON.stringify(b.events)).not.toContain(ja);
  expect(a.events.find((e) => e['type'] === 'job.progress')).toMatchObject({ job_id: ja, percent: 50, message: 'half', tenant: 'acme' });
  expect(b.events.find((e) => e['type'] === 'alert')).toMatchObject({ message: 'for globex', tenant: 'globex' });
  expect(JSON.stringify(b.events)).not.toContain('wf for acme');
  a.ws.close();
  b.ws.close();
});

it('a WebSocket to the path as the plain route also matches it (trailing slash, other case) is the stream, not 426 (P171)', async () => {
  for (const path of ['/api/v1/stream/', '/API/v1/Stream']) {
    const c = await open(0, { headers: { 'X-API-Key': KEYS.operator } }, r.urls[0]!.replace('http://', 'ws://') + path);
    await waitFor(() => c.events.length > 0, 5_000, { message: `hello on ${path}` });
    expect(c.events[0]).toEqual({ type: 'hello', tenant: 'acme' });
    c.ws.close();
  }
  // any other path offered a WebSocket is still the plain request: 404
  await expect(open(0, { headers: { 'X-API-Key': KEYS.operator } }, r.urls[0]!.replace('http://', 'ws://') + '/api/v1/streams')).rejects.toThrow('HTTP 404');
});

it('rejects bad credentials before the upgrade with the JSON error status; plain GET is 426', async () => {
  await expect(open(0, {})).rejects.toThrow('HTTP 401');
  await expect(open(0, { protocols: ['cordum-api-key', Buffer.from('nope-nope-nope').toString('base64url')] })).rejects.toThrow('HTTP 401');
  await expect(open(0, { headers: { 'X-API-Key': KEYS.operator, 'X-Tenant-ID': 'globex' } })).rejects.toThrow('HTTP 403');
  // A `*` key over the subprotocol has no tenant of its own (D31).
  await expect(open(0, { protocols: ['cordum-api-key', Buffer.from(KEYS.star).toString('base64url')] })).rejects.toThrow('HTTP 400');
  const plain = await call(r.urls[0]!, 'GET', '/api/v1/stream', { key: KEYS.viewer });
  expect(plain.status).toBe(426);
  expect(plain.body['code']).toBe('upgrade_required');
});

it('a refused upgrade\'s socket is closed by the gateway, not left half-open holding a descriptor while the client keeps its end', async () => {
  const { port } = new URL(r.urls[0]!);
  const fds = () => readdirSync('/proc/self/fd').length; // the replicas run in this process
  const before = fds();
  const N = 40;
  const held: Socket[] = [];
  try {
    await Promise.all(
      Array.from({ length: N }, () =>
        new Promise<void>((resolve, reject) => {
          // allowHalfOpen: the client never ends its side, as a hostile one would not
          const sock = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true }, () =>
            sock.write(`GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key-wrong-key\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`),
          );
          held.push(sock);
          let data = '';
          sock.on('data', (d: Buffer) => {
            data += d.toString();
            if (data.includes('"unauthenticated"')) resolve();
          });
          sock.on('error', reject);
        }),
      ),
    );
    // Our N client ends stay open; the gateway's N ends must go (they held one descriptor each).
    await waitFor(() => fds() - before <= N + 5, 5_000, { message: 'the gateway closes the sockets of refused upgrades' });
  } finally {
    for (const s of held) s.destroy();
  }
});

it('a client that sends a message is closed with 1003; a frame over 1 KiB with 1009 (clients have nothing to send)', async () => {
  const talker = await open(0, { headers: { 'X-API-Key': KEYS.viewer } });
  talker.ws.send('hello?');
  expect((await talker.closed).code).toBe(1003);
  const big = await open(0, { headers: { 'X-API-Key': KEYS.viewer } });
  big.ws.ping(Buffer.alloc(100)); // control frames within their 125 bytes are fine
  big.ws.send(Buffer.alloc(2048), { binary: true });
  expect((await big.closed).code).toBe(1009);
});

it('a client that floods messages is cut, not read on through the close grace with a timer per message (P281)', async () => {
  const spy = jest.spyOn(global, 'setTimeout');
  try {
    const flood = await open(0, { headers: { 'X-API-Key': KEYS.viewer } });
    for (let i = 0; i < 2000; i++) flood.ws.send('x');
    await flood.closed;
    // the one close grace timer of the first message (5 s); before P281 each message armed another
    expect(spy.mock.calls.filter((c) => c[1] === 5_000 && String(c[0]).includes('terminate')).length).toBe(1);
  } finally {
    spy.mockRestore();
  }
});

it('a client that stops reading is closed with 4008 and the gateway heap stays bounded', async () => {
  // Its own tenant, so no other test client buffers these events in this process.
  const slow = await open(0, { headers: { 'X-API-Key': KEYS.star, 'X-Tenant-ID': 'slowco' } });
  const fast = await open(0, { headers: { 'X-API-Key': KEYS.star, 'X-Tenant-ID': 'fastco' } });
  await waitFor(() => slow.events.length > 0, 5_000, { message: 'hello' });
  const raw = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  raw.pause();
  gc();
  const before = process.memoryUsage().heapUsed;
  const big = 'x'.repeat(2048);
  let sent = 0;
  const closedMetric = async () => (await metric(r.urls[0]!, 'cordum_ws_slow_consumer_closed_total')) ?? 0;
  while ((await closedMetric()) < 1 && sent < 200_000) {
    for (let i = 0; i < 500; i++) publishAlert('slowco', `${sent++}:${big}`);
    await bus.flush();
  }
  expect(await closedMetric()).toBe(1);
  // Read again within the server's close grace (5 s; after it the server terminates the
  // socket and the client would only see 1006): the queued events drain, then the 4008 frame.
  raw.resume();
  const { code } = await slow.closed;
  expect(code).toBe(4008);
  // Keep pushing well past the limit: nothing more may be queued for the dropped client.
  for (let batch = 0; batch < 40; batch++) {
    for (let i = 0; i < 500; i++) publishAlert('slowco', `${sent++}:${big}`);
    await bus.flush();
  }
  // A marker behind them on the same connection: once the fast client has it, gw-1 has handled every slowco event.
  publishAlert('fastco', 'marker');
  await bus.flush();
  await waitFor(() => fast.events.some((e) => e['message'] === 'marker'), 10_000, { message: 'marker through gw-1' });
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  // 256 queued events of ~2 KiB is ~0.5 MiB; the pushed total is far larger (sent × 2 KiB).
  expect(sent * 2048).toBeGreaterThan(40 * 1024 * 1024);
  expect(grown).toBeLessThan(16 * 1024 * 1024);
});

describe('bus subscription follows the stream clients (issue 7)', () => {
  let q: Replicas;
  let qbus: Bus;
  beforeAll(async () => {
    q = await startReplicas(2, {}, { streamUnsubscribeLingerMs: 300 });
    qbus = await connectBus({ servers: [q.nats.url], name: 'stream-sub-test', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
  });
  afterAll(async () => {
    await qbus.close();
    await q.stop();
  });
  const received = async (i: number) => (await metric(q.urls[i]!, 'cordum_ws_bus_messages_total')) ?? 0;
  const qOpen = (i: number) => open(i, { headers: { 'X-API-Key': KEYS.operator } }, q.urls[i]!.replace('http://', 'ws://') + '/api/v1/stream');
  /** Publishes `n` alerts and a marker, and waits until `watcher` (a client on gw-2) has the marker. */
  const burst = async (watcher: Client, n: number, marker: string) => {
    for (let i = 0; i < n; i++) publishAlert('acme', `${marker}-${i}`, subjects.alert, qbus);
    publishAlert('acme', marker, subjects.alert, qbus);
    await qbus.flush();
    await waitFor(() => watcher.events.some((e) => e['message'] === marker), 5_000, { message: `${marker} on gw-2` });
  };

  it('a replica without clients receives no broadcasts; its first client subscribes it before the hello; it unsubscribes after the last one leaves', async () => {
    // gw-2 has a client and gw-1 none: gw-2 seeing the marker proves the burst went out while gw-1 had no client.
    const watcher = await qOpen(1);
    await waitFor(() => watcher.events.length > 0, 5_000, { message: 'hello on gw-2' });
    await burst(watcher, 50, 'before');
    expect(await received(1)).toBeGreaterThanOrEqual(51);
    expect(await received(0)).toBe(0);

    // The hello promises the subscription: an event published right after it is streamed.
    const a = await qOpen(0);
    await waitFor(() => a.events.length > 0, 5_000, { message: 'hello on gw-1' });
    expect(a.events[0]).toEqual({ type: 'hello', tenant: 'acme' });
    publishAlert('acme', 'after-hello', subjects.alert, qbus);
    await qbus.flush();
    await waitFor(() => a.events.some((e) => e['message'] === 'after-hello'), 5_000, { message: 'first event after the hello' });
    expect(a.events.some((e) => typeof e['message'] === 'string' && e['message'].startsWith('before'))).toBe(false);

    // Last client gone: once the linger (300 ms here) has passed, a burst no longer reaches gw-1.
    a.ws.close();
    await a.closed;
    let round = 0;
    await waitFor(async () => {
      const before = await received(0);
      await burst(watcher, 10, `after-close-${round++}`);
      return (await received(0)) === before;
    }, 10_000, { message: 'gw-1 stops receiving after its last client left' });
    watcher.ws.close();
  });
});

describe('a stalled bus does not withhold the hello', () => {
  let q: Replicas;
  beforeAll(async () => {
    q = await startReplicas(1);
  });
  afterAll(async () => {
    q.nats.process.kill('SIGCONT');
    await q.stop();
  });

  it('a client connecting while NATS is stopped (kill -STOP) gets its hello within the confirm bound', async () => {
    await q.nats.process.freeze();
    const t0 = Date.now();
    const c = await open(0, { headers: { 'X-API-Key': KEYS.operator } }, q.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream');
    await waitFor(() => c.events.length > 0, 6_000, { message: 'hello while NATS is stopped' });
    expect(c.events[0]).toEqual({ type: 'hello', tenant: 'acme' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    q.nats.process.kill('SIGCONT');
    c.ws.close();
  });
});

describe('ping', () => {
  let p: Replicas;
  beforeAll(async () => {
    p = await startReplicas(1, {}, { streamPingIntervalMs: 200 });
  });
  afterAll(async () => {
    await p.stop();
  });

  it('pings every interval; a live client answers and stays connected', async () => {
    const ws = new WebSocket(p.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream', { headers: { 'X-API-Key': KEYS.viewer } });
    sockets.push(ws);
    let pings = 0;
    ws.on('ping', () => pings++);
    await waitFor(() => pings >= 3, 5_000, { message: 'pings' });
    expect(ws.readyState).toBe(WebSocket.OPEN);
    ws.close();
  });

  it('a client that stops answering pings is cut', async () => {
    const ws = new WebSocket(p.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream', { headers: { 'X-API-Key': KEYS.viewer }, autoPong: false });
    sockets.push(ws);
    const closed = new Promise<number>((res) => ws.on('close', (code) => res(code)));
    await new Promise((res) => ws.once('open', res));
    expect(await closed).toBe(1006);
  });
});

