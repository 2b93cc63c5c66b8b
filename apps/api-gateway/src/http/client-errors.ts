// Requests Node's HTTP server answers itself, before express sees them, were answered with a bare
// status line and no body (or, for CONNECT, not at all). Here they get the same JSON envelope as
// every other error (D28, P96):
// - the parser refuses the request (headers over 16 KiB, a malformed request line, headers or body
//   not received in time): `clientError`;
// - an `Expect` other than 100-continue: `checkExpectation`, 417 expectation_failed;
// - CONNECT (the gateway is no proxy): `connect`, 405 method_not_allowed;
// - `Expect: 100-continue` with a declared body over the limit: `checkContinue`, 413
//   payload_too_large instead of inviting the upload (P214); any other gets its 100 Continue;
// - an HTTP/1.1 request without Host: Node's check is turned off here and the app answers it
//   (400 bad_request, http/app.ts), so it carries X-Request-ID and is logged and counted.
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode } from './errors';
import { requestIdOf } from './request-id';

function codeFor(err: NodeJS.ErrnoException): ErrorCode {
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'headers_too_large';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'request_timeout';
  return 'bad_request';
}

function envelope(code: ErrorCode, message?: string): { status: number; body: string } {
  const { status, message: text } = ERROR_CODES[code];
  return { status, body: JSON.stringify({ error: message ?? text, code, status }) };
}

/** The headers on every answer of the gateway: requestContext's (app.ts), and those written by hand here and by the stream's refusals. */
export function commonHeaders(requestId: string): Record<string, string> {
  return { 'X-Request-ID': requestId, 'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY', 'Cache-Control': 'no-store' };
}

/** The request id of a request Node answers before express: the client's X-Request-ID when well formed, else a new one. */
export function requestIdOfRaw(req: IncomingMessage | undefined): string {
  const given = req?.headers['x-request-id'];
  return requestIdOf(typeof given === 'string' ? given : undefined);
}

/** The headers of a JSON answer that closes the connection: the body's type and length, `headers`, Connection: close. */
function closingJsonHeaders(body: string, headers: Record<string, string>): Record<string, string> {
  return { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), ...headers, Connection: 'close' };
}

/** A whole JSON response, closing the connection, for a socket Node no longer serves. */
export function rawJsonResponse(status: number, body: string, headers: Record<string, string>): string {
  const lines = Object.entries(closingJsonHeaders(body, headers)).map(([k, v]) => `${k}: ${v}\r\n`);
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${lines.join('')}\r\n${body}`;
}

/** How long an answer to a socket that has left the HTTP server may take to flush before the socket is cut (no server timeout applies to it, P95). */
const RAW_FLUSH_MS = 2_000;

/** Writes a whole raw response to a socket the HTTP server no longer serves and closes it for good: destroyed once flushed, or after RAW_FLUSH_MS. */
export function answerSocket(socket: Duplex, response: string): void {
  const cut = setTimeout(() => socket.destroy(), RAW_FLUSH_MS);
  cut.unref();
  socket.end(response, () => {
    clearTimeout(cut);
    socket.destroy();
  });
}

/** The envelope of `code` as a raw response; `headers` are added to the common ones. */
function rawResponse(code: ErrorCode, req: IncomingMessage | undefined, opts: { message?: string; headers?: Record<string, string> } = {}): string {
  const { status, body } = envelope(code, opts.message);
  return rawJsonResponse(status, body, { ...commonHeaders(requestIdOfRaw(req)), ...opts.headers });
}

/** The envelope as a whole response that closes the connection: the request's body, if any, is never read. */
function answerAndClose(req: IncomingMessage, res: ServerResponse, code: ErrorCode): void {
  const { status, body } = envelope(code);
  res.writeHead(status, closingJsonHeaders(body, commonHeaders(requestIdOfRaw(req))));
  res.end(body);
}


/** A request's declared body length above `max` (Content-Length; a chunked body declares none). */
export function declaredOver(req: IncomingMessage, max: number): boolean {
  const n = Number(req.headers['content-length']);
  return Number.isFinite(n) && n > max;
}

/** `maxBodyBytes`: the largest body a route reads (2 MiB); a larger declared one is refused before its upload. */
export function answerClientErrors(server: Server, maxBodyBytes: number): void {
  // Node would answer a Host-less HTTP/1.1 request with an empty 400 before the app sees it; the app
  // answers it with the envelope instead (requireHostHeader is read per request).
  (server as Server & { requireHostHeader: boolean }).requireHostHeader = false;

  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // As Node's own handler: answer unless the connection is gone or a response has begun (a
    // body that arrives too slowly, past requestTimeout, is answered 408 here too).
    const res = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || res?.headersSent) {
      socket.destroy();
      return;
    }
    // Then closed from our side too, as Node does: a client that never closes must not keep the socket.
    socket.end(rawResponse(codeFor(err), undefined), () => socket.destroy());
  });

  // Node calls this for an HTTP/1.1 Expect other than 100-continue (and answers 417 with no body
  // when nobody listens). The body, if any, is not read: the connection is closed after the answer.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => answerAndClose(req, res, 'expectation_failed'));

  // P214: Node answers 100 Continue by itself when nobody listens, inviting a body the routes then
  // refuse; body-parser reads and drops all of it before its 413. A declared body over the limit is
  // answered 413 at once and the connection closed; any other request goes on as Node would.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (!declaredOver(req, maxBodyBytes)) {
      res.writeContinue();
      server.emit('request', req, res);
      return;
    }
    answerAndClose(req, res, 'payload_too_large');
  });

  // CONNECT asks for a tunnel; without a listener Node drops the connection without a word. Its
  // target is a host:port, not a resource of ours, so the Allow is empty (RFC 9110 §10.2.1).
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    answerSocket(socket, rawResponse('method_not_allowed', req, { message: 'CONNECT is not supported: the gateway is not a proxy', headers: { Allow: '' } }));
  });
}
