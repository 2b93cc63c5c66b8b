// WebSocket stream bounds (decisions.md P98): open streams per tenant and per replica, a client
// that stops reading large events is closed on bytes queued (not only on events), and one event
// to more sockets than one fan-out chunk reaches each of them, in order.
import type WebSocket from 'ws';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { SystemAlertSchema, create, encodePacket, newPacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { KEYS, metric } from './harness';
import { startReplicas, type Replicas } from './replicas';
import { openStream, type StreamClient } from './stream-client';

const sockets: WebSocket[] = [];

const open = (url: string, tenant: string): Promise<StreamClient> => openStream(url, { headers: { 'X-API-Key': KEYS.star, 'X-Tenant-ID': tenant } }, sockets);

function publishAlert(bus: Bus, tenant: string, message: string): void {
  const a = create(SystemAlertSchema, { level: 'WARN', message, component: 'test', code: 'x', details: { tenant_id: tenant } });
  bus.publishCore(subjects.alert, encodePacket(newPacket('test', { case: 'alert', value: a })));
}

const quiet = createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined });

afterAll(() => {
  for (const s of sockets) s.terminate();
});

describe('stream caps (3 per tenant, 5 per replica)', () => {
  let r: Replicas;
  beforeAll(async () => {
    r = await startReplicas(1, { GATEWAY_STREAM_MAX_CLIENTS: '5', GATEWAY_STREAM_MAX_CLIENTS_PER_TENANT: '3' });
  });
  afterAll(async () => {
    for (const s of sockets) s.terminate();
    await r.stop();
  });
  const url = () => r.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream';

  it('a tenant past its cap gets 429 too_many_streams, the replica past its cap 503 stream_capacity; a closed stream frees its slot', async () => {
    const acme = [await open(url(), 'capa'), await open(url(), 'capa'), await open(url(), 'capa')];
    // Retry-After as on every 429 the OpenAPI description lists (5 s; retry_after_ms in the body).
    await expect(open(url(), 'capa')).rejects.toThrow(/^HTTP 429 .*"too_many_streams".*"retry_after_ms":5000.* retry-after=5$/);
    await open(url(), 'capb');
    await open(url(), 'capb');
    await expect(open(url(), 'capc')).rejects.toThrow(/^HTTP 503 .*"stream_capacity"/);
    acme[0]!.ws.close();
    await acme[0]!.closed;
    await waitFor(async () => {
      try {
        await open(url(), 'capa');
        return true;
      } catch {
        return false;
      }
    }, 5_000, { message: 'a slot freed by the close' });
    expect(await metric(r.urls[0]!, 'cordum_ws_upgrades_total', 'code="too_many_streams"')).toBe(1);
    expect(await metric(r.urls[0]!, 'cordum_ws_upgrades_total', 'code="stream_capacity"')).toBeGreaterThanOrEqual(1);
    expect(await metric(r.urls[0]!, 'cordum_ws_upgrades_total', 'code="ok"')).toBe(6);
  });
});

describe('fan-out and the byte bound (default caps)', () => {
  let r: Replicas;
  let bus: Bus;
  beforeAll(async () => {
    r = await startReplicas(1);
    bus = await connectBus({ servers: [r.nats.url], name: 'stream-limits', logger: quiet });
  });
  afterAll(async () => {
    for (const s of sockets) s.terminate();
    await bus.close();
    await r.stop();
  });
  const url = () => r.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream';

  it('events to 300 sockets of one tenant (more than one fan-out chunk) reach every socket, in order', async () => {
    const clients = await Promise.all(Array.from({ length: 300 }, () => open(url(), 'fanco')));
    await waitFor(() => clients.every((c) => c.events.length > 0), 10_000, { message: 'hellos' });
    for (let i = 0; i < 20; i++) publishAlert(bus, 'fanco', `n${i}`);
    await bus.flush();
    const want = Array.from({ length: 20 }, (_, i) => `n${i}`);
    await waitFor(() => clients.every((c) => c.events.length === 21), 20_000, { message: 'every socket has every event' });
    for (const c of clients) expect(c.events.slice(1).map((e) => e['message'])).toEqual(want);
    for (const c of clients) c.ws.close();
  });

  it('a client that stops reading large events is closed with 4008 on 4 MiB queued, long before 256 events', async () => {
    const slow = await open(url(), 'bigco');
    await waitFor(() => slow.events.length > 0, 5_000, { message: 'hello' });
    const raw = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    raw.pause();
    const big = 'x'.repeat(700 * 1024);
    let sent = 0;
    const closedMetric = async () => (await metric(r.urls[0]!, 'cordum_ws_slow_consumer_closed_total')) ?? 0;
    while ((await closedMetric()) < 1 && sent < 200) {
      publishAlert(bus, 'bigco', `${sent++}:${big}`);
      await bus.flush();
    }
    expect(await closedMetric()).toBe(1);
    // 4 MiB of 700 KiB events, plus what the kernel's socket buffers took: far below 256
    expect(sent).toBeLessThan(64);
    raw.resume();
    expect((await slow.closed).code).toBe(4008);
  });
});
