// P133: the stream is at most once, and says where it may have lost events. A gateway whose NATS
// connection was lost and came back, or that dropped events because Redis could not tell their
// tenant, sends every client a `gap` frame, after which the client re-reads state. Real
// nats-server (SIGKILLed and restarted on its port) and redis-server (frozen with SIGSTOP).
import type WebSocket from 'ws';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { JobProgressSchema, JobStatus, SystemAlertSchema, create, encodePacket, newPacket } from '@cordum/protocol';
import { STATE_BROADCAST_LOST } from '@cordum/job-store';
import { createLogger } from '@cordum/service-kit';
import { waitFor, type TestServer } from '@cordum/testing';
import { KEYS, metric } from './harness';
import { startReplicas, type Replicas } from './replicas';
import { openStream, type StreamClient } from './stream-client';

let r: Replicas;
let bus: Bus;
let restarted: TestServer | undefined;
const sockets: WebSocket[] = [];

beforeAll(async () => {
  r = await startReplicas(1);
  bus = await connectBus({ servers: [r.nats.url], name: 'stream-gap-test', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
});

afterAll(async () => {
  for (const s of sockets) s.terminate();
  await bus?.close();
  await r?.stop();
  await restarted?.stop();
});

const open = async (key: string): Promise<StreamClient> => {
  const c = await openStream(r.urls[0]!.replace('http://', 'ws://') + '/api/v1/stream', { headers: { 'X-API-Key': key } }, sockets);
  await waitFor(() => c.events.length > 0, 5_000, { message: 'hello' });
  return c;
};
const gapsOf = (c: StreamClient, reason: string) => c.events.filter((e) => e['type'] === 'gap' && e['reason'] === reason);
const indexOf = (c: StreamClient, message: string) => c.events.findIndex((e) => e['message'] === message);
const gapMetric = async (reason: string) => (await metric(r.urls[0]!, 'cordum_ws_gaps_total', `reason="${reason}"`)) ?? 0;

function publishAlert(tenant: string, message: string): void {
  const a = create(SystemAlertSchema, { level: 'WARN', message, component: 'test', code: 'x', details: { tenant_id: tenant } });
  bus.publishCore(subjects.alert, encodePacket(newPacket('test', { case: 'alert', value: a })));
}

function publishState(jobId: string): void {
  const p = create(JobProgressSchema, { jobId, status: JobStatus.RUNNING, message: 'RUNNING' });
  bus.publishCore(subjects.state, encodePacket(newPacket('scheduler-test', { case: 'jobProgress', value: p })));
}

/** Publishes `message` to acme until `c` has it (the test's own connection may still be reconnecting). */
async function reaches(c: StreamClient, message: string): Promise<void> {
  await waitFor(async () => {
    if (indexOf(c, message) >= 0) return true;
    publishAlert('acme', message);
    await bus.flush().catch(() => undefined);
    return false;
  }, 15_000, { intervalMs: 200, message: `${message} reaches the client` });
}

it('NATS lost and back: every client gets one gap naming when the connection was lost, and events flow after it', async () => {
  const a = await open(KEYS.operator); // acme
  const b = await open(KEYS.globex);
  await reaches(a, 'before');
  const lost = Date.now();
  r.nats.process.kill('SIGKILL');
  await r.nats.process.waitExit();
  restarted = await r.nats.restart();
  await waitFor(() => gapsOf(a, 'bus_reconnected').length > 0 && gapsOf(b, 'bus_reconnected').length > 0, 20_000, { message: 'gap frames' });
  const gap = gapsOf(a, 'bus_reconnected')[0]!;
  expect(gap).toEqual({ type: 'gap', tenant: 'acme', reason: 'bus_reconnected', since: expect.any(String), at: expect.any(String) });
  expect(Date.parse(gap['since'] as string)).toBeGreaterThanOrEqual(lost - 50);
  expect(Date.parse(gap['at'] as string)).toBeGreaterThan(Date.parse(gap['since'] as string));
  expect(gapsOf(b, 'bus_reconnected')[0]).toMatchObject({ tenant: 'globex', since: gap['since'] });
  await reaches(a, 'after');
  expect(indexOf(a, 'after')).toBeGreaterThan(a.events.indexOf(gap));
  expect(gapsOf(a, 'bus_reconnected')).toHaveLength(1);
  expect(await gapMetric('bus_reconnected')).toBe(1);
  a.ws.close();
  b.ws.close();
}, 60_000);

it('events whose tenant Redis cannot tell are dropped and announced: one gap at once, one after the last drop, not one per event', async () => {
  const a = await open(KEYS.operator);
  const dropped = async () => (await metric(r.urls[0]!, 'cordum_ws_events_dropped_total', 'reason="tenant_unknown"')) ?? 0;
  const before = await dropped();
  // A job without a record is nobody's event: dropped, and no gap.
  publishState(`no-such-job-${process.pid}`);
  await reaches(a, 'marker-1');
  expect(gapsOf(a, 'events_dropped')).toHaveLength(0);

  await r.redis.process.freeze();
  try {
    // Five lookups time out together (1 s): five drops, one gap now and one trailing.
    for (let i = 0; i < 5; i++) publishState(`unknown-${process.pid}-${i}`);
    await bus.flush();
    await waitFor(async () => (await dropped()) === before + 5, 10_000, { message: 'five events dropped' });
  } finally {
    r.redis.process.thaw();
  }
  await waitFor(async () => (await gapMetric('events_dropped')) === 2, 5_000, { message: 'the trailing gap' });
  await reaches(a, 'marker-2');
  const gaps = gapsOf(a, 'events_dropped');
  expect(gaps).toHaveLength(2);
  expect(gaps[0]).toEqual({ type: 'gap', tenant: 'acme', reason: 'events_dropped', at: expect.any(String) });
  expect(Date.parse(gaps[1]!['at'] as string) - Date.parse(gaps[0]!['at'] as string)).toBeGreaterThanOrEqual(900);
  a.ws.close();
}, 60_000);

it('another replica\'s state_broadcast_lost alert is a gap for every client, naming its since (P148), not an alert event', async () => {
  const a = await open(KEYS.operator); // acme
  const b = await open(KEYS.globex);
  await reaches(a, 'before-lost');
  const since = new Date(Date.now() - 30_000).toISOString();
  const alert = create(SystemAlertSchema, { level: 'WARN', message: 'lost', component: 'scheduler', code: STATE_BROADCAST_LOST, details: { since, lost: '3', sender: 'sched-x' } });
  bus.publishCore(subjects.alert, encodePacket(newPacket('sched-x', { case: 'alert', value: alert })));
  await bus.flush();
  await waitFor(() => gapsOf(a, 'broadcast_lost').length > 0 && gapsOf(b, 'broadcast_lost').length > 0, 10_000, { message: 'gap frames' });
  expect(gapsOf(a, 'broadcast_lost')[0]).toEqual({ type: 'gap', tenant: 'acme', reason: 'broadcast_lost', since, at: expect.any(String) });
  expect(gapsOf(b, 'broadcast_lost')[0]).toMatchObject({ tenant: 'globex', since });
  await reaches(a, 'after-lost');
  expect(a.events.some((e) => e['type'] === 'alert' && e['code'] === STATE_BROADCAST_LOST)).toBe(false);
  expect(await gapMetric('broadcast_lost')).toBe(1);
  a.ws.close();
  b.ws.close();
}, 30_000);
