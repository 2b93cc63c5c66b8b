// An open WebSocket stream re-checks its managed API key (D27, D31): revoked on
// one replica or expired, every stream of that key on every replica is closed
// with 4401 within 1 s and gets nothing more; static-key streams stay open; a
// key store that cannot answer closes nothing.
import WebSocket from 'ws';
import { waitFor } from '@cordum/testing';
import { RECORD_CACHE_MS } from '../src/auth/managed';
import { RECHECK_INTERVAL_MS } from '../src/stream/recheck';
import { CLOSE_KEY_INVALID } from '../src/stream/ws';
import { KEYS, call, metric } from './harness';
import { startReplicas, type Replicas } from './replicas';

interface Client {
  ws: WebSocket;
  events: Record<string, unknown>[];
  /** Set when the close arrives: code, reason and the local time it arrived. */
  closed: { code: number; reason: string; at: number } | null;
}

const sockets: WebSocket[] = [];
const b64 = (s: string) => Buffer.from(s).toString('base64url');

async function open(url: string, opts: { headers?: Record<string, string>; protocols?: string[] }): Promise<Client> {
  const ws = new WebSocket(url.replace('http://', 'ws://') + '/api/v1/stream', opts.protocols ?? [], { headers: opts.headers });
  sockets.push(ws);
  const c: Client = { ws, events: [], closed: null };
  ws.on('message', (d: Buffer) => c.events.push(JSON.parse(d.toString()) as Record<string, unknown>));
  ws.on('close', (code, reason) => (c.closed = { code, reason: reason.toString(), at: Date.now() }));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  await waitFor(() => c.events.some((e) => e['type'] === 'hello'), 5_000, { message: 'hello' });
  return c;
}

async function createKey(url: string, body: Record<string, unknown>): Promise<{ id: string; key: string; expires_at: string | null }> {
  const res = await call(url, 'POST', '/api/v1/auth/keys', { key: KEYS.admin, body });
  expect(res.status).toBe(201);
  return res.body as { id: string; key: string; expires_at: string | null };
}

async function submit(url: string): Promise<string> {
  const res = await call(url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic: 'job.echo' } });
  expect(res.status).toBe(200);
  return String(res.body['job_id']);
}

const pendingOf = (c: Client, jobId: string) => c.events.some((e) => e['type'] === 'job.state' && e['job_id'] === jobId && e['state'] === 'PENDING');
const closedFor = (cs: Client[], what: string) => waitFor(() => cs.every((c) => c.closed !== null), 5_000, { message: what });

afterAll(() => {
  for (const s of sockets) s.terminate();
});

describe('two replicas', () => {
  let r: Replicas;
  /** Static-key streams, one per replica, open for the whole describe. */
  let watchers: Client[];

  beforeAll(async () => {
    r = await startReplicas(2);
    watchers = [
      await open(r.urls[0]!, { headers: { 'X-API-Key': KEYS.viewer } }),
      await open(r.urls[1]!, { protocols: ['cordum-api-key', b64(KEYS.operator)] }),
    ];
  });

  afterAll(async () => {
    for (const w of watchers) w.ws.close();
    await r.stop();
  });

  /** A job submitted now: every static-key watcher gets its PENDING, so the bus delivered it to both replicas. */
  async function jobSeenByWatchers(): Promise<string> {
    const id = await submit(r.urls[0]!);
    await waitFor(() => watchers.every((w) => pendingOf(w, id)), 5_000, { message: 'watchers get the PENDING' });
    return id;
  }

  it('a key revoked on one replica closes its streams on both with 4401 within 1 s; nothing more reaches them', async () => {
    const k = await createKey(r.urls[0]!, { role: 'viewer', name: 'stream' });
    const streams = [
      await open(r.urls[0]!, { headers: { 'X-API-Key': k.key } }),
      await open(r.urls[1]!, { protocols: ['cordum-api-key', b64(k.key)] }),
    ];
    // Live before the revocation.
    const before = await jobSeenByWatchers();
    await waitFor(() => streams.every((s) => pendingOf(s, before)), 5_000, { message: 'managed streams get events' });

    const del = await call(r.urls[0]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin });
    expect(del.status).toBe(200);
    const revokedAt = Date.now();
    await closedFor(streams, 'both managed streams closed');
    for (const s of streams) {
      expect(s.closed).toMatchObject({ code: CLOSE_KEY_INVALID, reason: expect.stringMatching(/^unauthenticated:/) as unknown });
      // the promise (1 s) is the design's budget; the wall time adds the close handshake and a
      // loaded machine's late timers, so it gets a second more (a stream never re-checked stays open)
      expect(s.closed!.at - revokedAt).toBeLessThan(RECORD_CACHE_MS + RECHECK_INTERVAL_MS + 1_000);
    }
    expect(RECORD_CACHE_MS + RECHECK_INTERVAL_MS).toBeLessThan(1_000);
    expect(CLOSE_KEY_INVALID).toBe(4401);

    const after = await jobSeenByWatchers();
    for (const s of streams) expect(JSON.stringify(s.events)).not.toContain(after);
    // The same key over HTTP agrees.
    for (const url of r.urls) expect((await call(url, 'GET', '/api/v1/jobs/x', { key: k.key })).status).toBe(401);
    expect(await metric(r.urls[0]!, 'cordum_ws_key_invalid_closed_total')).toBe(1);
    expect(await metric(r.urls[1]!, 'cordum_ws_key_invalid_closed_total')).toBe(1);
  });

  it('a key created with ttl_seconds closes its streams with 4401 once it expires', async () => {
    const k = await createKey(r.urls[1]!, { role: 'viewer', ttl_seconds: 2 });
    const expiresAt = Date.parse(k.expires_at!);
    const streams = [
      await open(r.urls[0]!, { protocols: ['cordum-api-key', b64(k.key)] }),
      await open(r.urls[1]!, { headers: { Authorization: `Bearer ${k.key}` } }),
    ];
    const before = await jobSeenByWatchers();
    await waitFor(() => streams.every((s) => pendingOf(s, before)), 5_000, { message: 'managed streams get events' });

    await closedFor(streams, 'both streams closed after expiry');
    for (const s of streams) {
      expect(s.closed!.code).toBe(CLOSE_KEY_INVALID);
      expect(s.closed!.at).toBeGreaterThanOrEqual(expiresAt);
      expect(s.closed!.at - expiresAt).toBeLessThan(1_000);
    }
    const after = await jobSeenByWatchers();
    for (const s of streams) expect(JSON.stringify(s.events)).not.toContain(after);
  });

  it('static-key streams stay open and keep receiving while managed streams beside them are closed', async () => {
    const k = await createKey(r.urls[0]!, { role: 'operator' });
    const managed = await open(r.urls[0]!, { headers: { 'X-API-Key': k.key } });
    // A `*` key naming its tenant, beside the watchers' plain static keys.
    const star = await open(r.urls[0]!, { headers: { 'X-API-Key': KEYS.star, 'X-Tenant-ID': 'acme' } });
    const closedBefore = (await metric(r.urls[0]!, 'cordum_ws_key_invalid_closed_total')) ?? 0;
    expect((await call(r.urls[1]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin })).status).toBe(200);
    // gw-1 has re-checked since the revocation: its managed stream is closed...
    await closedFor([managed], 'managed stream closed');
    expect(managed.closed!.code).toBe(CLOSE_KEY_INVALID);
    // ...and its static-key streams were left alone and still get every event.
    const id = await jobSeenByWatchers();
    await waitFor(() => pendingOf(star, id), 5_000, { message: 'star stream gets the PENDING' });
    for (const c of [...watchers, star]) {
      expect(c.closed).toBeNull();
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
    }
    expect(await metric(r.urls[0]!, 'cordum_ws_key_invalid_closed_total')).toBe(closedBefore + 1);
    star.ws.close();
  });
});

describe('key store unreachable during the re-check', () => {
  let q: Replicas;
  beforeAll(async () => {
    q = await startReplicas(1);
  });
  afterAll(async () => {
    q.redis.process.kill('SIGCONT');
    await q.stop();
  });

  it('Redis frozen: the managed stream stays open (re-checks fail, counted); once Redis answers, a revocation closes it', async () => {
    const k = await createKey(q.urls[0]!, { role: 'viewer' });
    const s = await open(q.urls[0]!, { headers: { 'X-API-Key': k.key } });
    await q.redis.process.freeze();
    // Each failed re-check waited out the record cache and a Redis command timeout.
    await waitFor(async () => ((await metric(q.urls[0]!, 'cordum_ws_key_recheck_failed_total')) ?? 0) >= 2, 15_000, { message: 're-checks failed twice' });
    expect(s.closed).toBeNull();
    expect(s.ws.readyState).toBe(WebSocket.OPEN);
    q.redis.process.kill('SIGCONT');

    await waitFor(async () => (await call(q.urls[0]!, 'DELETE', `/api/v1/auth/keys/${k.id}`, { key: KEYS.admin })).status === 200, 10_000, { message: 'revoked after the thaw' });
    await closedFor([s], 'stream closed after the revocation');
    expect(s.closed!.code).toBe(CLOSE_KEY_INVALID);
  });
});
