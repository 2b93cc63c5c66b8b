// WebSocket `GET /api/v1/stream` (CONTRACT §2, D31). Auth by X-API-Key /
// Authorization (+ X-Tenant-ID) or by subprotocol `cordum-api-key, <base64url
// key>` (tenant = the key's tenant; the server echoes only `cordum-api-key`).
// Each client has a bounded queue: events handed to the socket but not yet
// flushed to the kernel count against MAX_QUEUED; at the limit the client is
// closed with 4008, so a client that stops reading costs at most MAX_QUEUED
// events of heap, never more. A stream opened with a managed key is closed with
// 4401 within 1 s of the key being revoked or expiring (recheck.ts, D27).
import { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { finished, type Duplex } from 'node:stream';
import { Counter, Gauge, type Registry } from 'prom-client';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '@cordum/service-kit';
import { authorizeCharging, identify, type Caller } from '../auth/middleware';
import type { KeyIdentity, KeyStore } from '../auth/keys';
import { ApiError, retryAfter } from '../http/errors';
import { answerSocket, commonHeaders, rawJsonResponse, requestIdOfRaw } from '../http/client-errors';
import type { RateLimiter } from '../ratelimit/limiter';
import { chargeRequest } from '../ratelimit/middleware';
import type { StreamHub } from './hub';
import { createKeyRechecker } from './recheck';
import { errorText } from '@cordum/service-kit';

export const STREAM_PATH = '/api/v1/stream';
export const SUBPROTOCOL = 'cordum-api-key';
export const CLOSE_SLOW_CONSUMER = 4008;
/**
 * The key that opened the stream no longer allows it (managed key revoked or expired, or
 * its tenant/role no longer fit): 4000 + the 401 an HTTP call with that key now gets. The
 * reason is the HTTP error code (`unauthenticated`, `forbidden`, `tenant_mismatch`).
 * A client should not reconnect with the same key.
 */
export const CLOSE_KEY_INVALID = 4401;
export const MAX_QUEUED = 256;
/**
 * And in bytes: 256 events of up to 1 MiB each (a NATS message) was a quarter of a GiB per
 * client that stopped reading. `ws.bufferedAmount` counts what the socket has not yet flushed.
 */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export interface StreamServerOptions {
  keys: KeyStore;
  hub: StreamHub;
  limiter?: RateLimiter;
  logger: Logger;
  registry: Registry;
  /** D31/CONTRACT: 30 s. */
  pingIntervalMs?: number;
  /** How long a closed slow client may keep its socket before it is cut. */
  closeGraceMs?: number;
  /** How often open streams re-check revocable keys (recheck.ts RECHECK_INTERVAL_MS). */
  keyRecheckIntervalMs?: number;
  /** Open streams on this replica; more are refused 503 `stream_capacity` (another replica may have room). Default 10,000. */
  maxClients?: number;
  /** Open streams of one tenant on this replica; more are refused 429 `too_many_streams`. Default 1,000. */
  maxClientsPerTenant?: number;
}

export interface StreamServer {
  close(): Promise<void>;
  readonly clients: number;
}

interface Presented {
  key: string | undefined;
  tenantHeader: string | undefined;
  viaSubprotocol: boolean;
}

/** What an upgrade was admitted with, kept for the key re-checks. */
interface Admitted {
  key: string;
  tenantHeader: string | undefined;
  id: KeyIdentity;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function presented(req: IncomingMessage): Presented {
  const protos = (header(req, 'sec-websocket-protocol') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const i = protos.indexOf(SUBPROTOCOL);
  if (i >= 0 && protos[i + 1] !== undefined) {
    // D31: with subprotocol auth the tenant is the key's; X-Tenant-ID is not consulted.
    return { key: Buffer.from(protos[i + 1] as string, 'base64url').toString('utf8'), tenantHeader: undefined, viaSubprotocol: true };
  }
  let key = header(req, 'x-api-key');
  if (key === undefined || key === '') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header(req, 'authorization') ?? '');
    key = m?.[1];
  }
  return { key, tenantHeader: header(req, 'x-tenant-id'), viaSubprotocol: false };
}

/**
 * The wait a tenant refused `too_many_streams` is told (Retry-After, as every 429 of the API): no
 * one knows when one of its streams will close, and 5 s keeps a reconnect loop from spinning.
 */
const STREAM_RETRY_AFTER_MS = 5_000;

/**
 * Answers a refused upgrade and closes its socket for good. A socket handed to the `upgrade` event
 * has left the HTTP server: no timeout applies to it and `closeAllConnections` does not see it, so
 * an `end()` alone left it half-open for as long as the client kept it (a keyless client held one
 * file descriptor per try, and one such socket held the gateway's stop to its deadline).
 */
function rejectUpgrade(req: IncomingMessage | undefined, socket: Duplex, err: ApiError): void {
  answerSocket(socket, rawJsonResponse(err.status, JSON.stringify(err.toBody()), { ...commonHeaders(requestIdOfRaw(req)), ...err.headers }));
}

/** Headers that offer an upgrade, dropped when a request is served as plain HTTP. */
const UPGRADE_TOKENS = new Set(['upgrade', 'http2-settings']);

/**
 * Serves a request that offered an upgrade we do not take as the plain HTTP request it also is:
 * its head is rebuilt without the offer and fed back to the server as a new connection on the
 * same socket, ahead of the bytes already read (its body, or pipelined requests). The server's
 * parser, limits, timeouts and routes then apply as to any request (RFC 9110 §7.8: a server may
 * ignore an upgrade offer).
 */
export function replayWithoutUpgrade(server: Server, req: IncomingMessage, socket: Duplex, head: Buffer, waiting: Set<Duplex>): void {
  const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}`];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    const lower = name.toLowerCase();
    if (UPGRADE_TOKENS.has(lower)) continue;
    if (lower === 'connection') {
      const rest = value
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t !== '' && !UPGRADE_TOKENS.has(t.toLowerCase()));
      if (rest.length > 0) lines.push(`${name}: ${rest.join(', ')}`);
      continue;
    }
    lines.push(`${name}: ${value}`);
  }
  // Node took its own error listener off the socket with the upgrade: until the server has it
  // again, a reset would be an uncaught exception (the gateway's fatal handler stops it).
  const onError = (): void => {
    socket.destroy();
  };
  socket.on('error', onError);
  const replay = (): void => {
    waiting.delete(socket);
    socket.off('error', onError);
    if (socket.destroyed) return;
    // The old connection's keep-alive timer would cut the replayed request's connection.
    (socket as Duplex & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    socket.unshift(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), head]));
    server.emit('connection', socket);
  };
  // Pipelined requests ahead of this one still being answered: the socket is theirs, one after
  // another, until the last has finished (a response assigned to it now would never be written).
  // Meanwhile the socket is in no server connection list: the stop destroys it (`waiting`).
  const whenIdle = (): void => {
    if (socket.destroyed) {
      waiting.delete(socket);
      return;
    }
    const pending = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (pending && !pending.writableFinished) {
      waiting.add(socket);
      // finished(), not 'finish': a response whose socket was reset never emits 'finish', and the
      // socket stayed in `waiting` (with its request and buffers) until the gateway stopped (P282).
      finished(pending, () => setImmediate(whenIdle));
      return;
    }
    replay();
  };
  whenIdle();
}

export function attachStreamServer(server: Server, o: StreamServerOptions): StreamServer {
  const pingMs = o.pingIntervalMs ?? 30_000;
  const graceMs = o.closeGraceMs ?? 5_000;
  const log = o.logger.child({ component: 'stream' });
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false, // compression would add an unbounded zlib queue per client
    // Clients have nothing to send but pongs and close frames (payloads ≤ 125 bytes); 64 KiB let
    // each socket pin an unfinished fragment of that size for as long as it answered pings.
    maxPayload: 1024,
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  const gClients = new Gauge({ name: 'cordum_ws_clients', help: 'Open WebSocket stream clients', registers: [o.registry] });
  const slowClosed = new Counter({ name: 'cordum_ws_slow_consumer_closed_total', help: 'Stream clients closed with 4008 for not reading', registers: [o.registry] });
  const upgrades = new Counter({ name: 'cordum_ws_upgrades_total', help: 'Stream upgrade requests by outcome: ok, or the error code they were refused with', labelNames: ['code'], registers: [o.registry] });
  const maxClients = o.maxClients ?? 10_000;
  const maxPerTenant = o.maxClientsPerTenant ?? 1_000;
  const perTenant = new Map<string, number>();
  const refuse = (req: IncomingMessage | undefined, socket: Duplex, err: ApiError): void => {
    upgrades.inc({ code: err.code });
    rejectUpgrade(req, socket, err);
  };
  const live = new Set<WebSocket>();
  const alive = new WeakMap<WebSocket, boolean>();
  const rechecker = createKeyRechecker({ keys: o.keys, logger: log, registry: o.registry, intervalMs: o.keyRecheckIntervalMs });
  let closing = false;
  /** Upgrade sockets still being authorized: outside the HTTP server, so the stop cuts them itself. */
  const authorizing = new Set<Duplex>();
  /** Requests that offered an upgrade, waiting for the responses ahead of them (replayWithoutUpgrade). */
  const replaying = new Set<Duplex>();

  const onConnection = (ws: WebSocket, c: Caller & { tenant: string }, a: Admitted): void => {
    live.add(ws);
    gClients.set(live.size);
    perTenant.set(c.tenant, (perTenant.get(c.tenant) ?? 0) + 1);
    upgrades.inc({ code: 'ok' });
    alive.set(ws, true);
    let queued = 0;
    let dead = false;
    const send = (json: string): void => {
      ws.send(json, () => {
        queued--;
      });
    };
    // Events that arrive before the hello wait for it (they count against the same limit).
    let early: string[] | null = [];
    let shutting = false;
    // From here on the sink drops every event: nothing more is handed to the socket. Once: ws
    // keeps reading (and emitting messages) while the close handshake runs (P281).
    const shut = (code: number, reason: string): void => {
      if (shutting) return;
      shutting = true;
      dead = true;
      early = null;
      remove();
      unwatch();
      ws.close(code, reason);
      setTimeout(() => ws.terminate(), graceMs).unref();
    };
    const { remove, subscribed } = o.hub.add(c.tenant, (json) => {
      if (dead) return;
      if (queued >= MAX_QUEUED || ws.bufferedAmount > MAX_BUFFERED_BYTES) {
        slowClosed.inc();
        log.info('stream client too slow, closing', { tenant: c.tenant, principal_id: c.principalId, queued, buffered_bytes: ws.bufferedAmount });
        shut(CLOSE_SLOW_CONSUMER, queued >= MAX_QUEUED ? 'slow consumer: 256 events queued' : 'slow consumer: 4 MiB queued');
        return;
      }
      queued++;
      if (early) early.push(json);
      else send(json);
    });
    const unwatch = rechecker.watch(a.key, a.id, {
      tenant: c.tenant,
      tenantHeader: a.tenantHeader,
      invalidate: (why) => {
        if (dead) return;
        log.info('stream key no longer valid, closing', { tenant: c.tenant, principal_id: c.principalId, code: why });
        shut(CLOSE_KEY_INVALID, `${why}: API key revoked, expired or no longer allowed`);
      },
    });
    ws.on('pong', () => alive.set(ws, true));
    // A data message is a client that has not read the protocol: closed with 1003. One sending on
    // after that is a flood: cut at once, not read for the close grace (each message of it armed
    // another grace timer before P281).
    ws.on('message', () => {
      if (shutting) ws.terminate();
      else shut(1003, 'clients send no messages on this stream');
    });
    ws.on('error', () => ws.terminate());
    ws.on('close', () => {
      dead = true;
      remove();
      unwatch();
      live.delete(ws);
      gClients.set(live.size);
      const n = (perTenant.get(c.tenant) ?? 1) - 1;
      if (n > 0) perTenant.set(c.tenant, n);
      else perTenant.delete(c.tenant);
    });
    // Clients have nothing to say (a message closes the stream, above). The hello goes
    // out once this replica's bus subscription is in place, so it promises that
    // every event published after it is streamed.
    void subscribed.then(() => {
      const waiting = early ?? [];
      early = null;
      if (dead) return;
      ws.send(JSON.stringify({ type: 'hello', tenant: c.tenant }));
      for (const json of waiting) send(json);
    });
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // Matched as express matches the plain route (case-insensitive, one trailing slash allowed):
    // a WebSocket to `/api/v1/stream/` was answered 426 "send Upgrade: websocket" (P171).
    const path = (req.url ?? '').split('?')[0]?.toLowerCase().replace(/(.)\/$/, '$1');
    // Node hands every request offering an upgrade here (`curl --http2` offers h2c on each one).
    // Only a WebSocket stream is ours; any other is served as the plain request it also is.
    if (path !== STREAM_PATH || req.headers.upgrade?.toLowerCase() !== 'websocket') {
      replayWithoutUpgrade(server, req, socket, head, replaying);
      return;
    }
    socket.on('error', () => socket.destroy());
    authorizing.add(socket);
    socket.once('close', () => authorizing.delete(socket));
    if (closing) {
      refuse(req, socket, new ApiError('not_found'));
      return;
    }
    void (async () => {
      const p = presented(req);
      // identify and authorize apart, so the stream keeps the identity (is it revocable?) for its re-checks.
      const id = await identify(o.keys, { ...p, client: req.socket.remoteAddress });
      if (id === null || p.key === undefined) throw new ApiError('unauthenticated');
      const charge = async (tenant: string | undefined): Promise<void> => {
        if (o.limiter) await chargeRequest(o.limiter, tenant, req.socket.remoteAddress);
      };
      // A refused authenticated upgrade counts against its key's tenant too (P172).
      const { caller: c, refused } = authorizeCharging(id, 'GET /api/v1/stream', p.tenantHeader);
      if (refused) {
        await charge(c.tenant);
        throw refused;
      }
      if (c.tenant === undefined) throw new ApiError('tenant_required');
      await charge(c.tenant);
      const tenant = c.tenant;
      const admitted: Admitted = { key: p.key, tenantHeader: p.tenantHeader, id };
      if (closing || socket.destroyed) throw new ApiError('not_found');
      // Checked after the key, so a keyless client learns nothing of the load. Bounds what one
      // tenant's streams cost the event loop: every event of the tenant goes to each of them.
      if (live.size >= maxClients) throw new ApiError('stream_capacity');
      if ((perTenant.get(tenant) ?? 0) >= maxPerTenant) {
        throw new ApiError('too_many_streams', { message: `this tenant has ${maxPerTenant} streams open on this gateway, the most it allows`, ...retryAfter(STREAM_RETRY_AFTER_MS) });
      }
      authorizing.delete(socket);
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, { ...c, tenant }, admitted));
    })().catch((err: unknown) => {
      if (err instanceof ApiError) refuse(req, socket, err);
      else {
        log.error('stream upgrade failed', { err: errorText(err) });
        refuse(req, socket, new ApiError('internal'));
      }
    });
  };
  server.on('upgrade', onUpgrade);
  // A handshake ws refuses (no or a bad Sec-WebSocket-Key / -Version / -Protocol, a POST): the
  // usual JSON error, not ws's own text/html answer.
  wss.on('wsClientError', (err, socket, req) => refuse(req, socket, new ApiError('bad_request', { message: `bad WebSocket handshake: ${err.message}` })));

  // Ping every interval; a client that did not pong since the last ping is gone.
  const pinger = setInterval(() => {
    for (const ws of live) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, pingMs);
  pinger.unref();

  return {
    get clients() {
      return live.size;
    },
    async close() {
      closing = true;
      clearInterval(pinger);
      rechecker.stop();
      server.off('upgrade', onUpgrade);
      for (const ws of live) ws.close(1001, 'gateway shutting down');
      // Give clients a moment to answer the close; cut the rest.
      const deadline = Date.now() + 1_000;
      while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const ws of live) ws.terminate();
      for (const socket of authorizing) socket.destroy();
      for (const socket of replaying) socket.destroy();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}
