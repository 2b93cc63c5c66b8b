// Requests Node's HTTP parser refuses before express sees them (headers over 16 KiB, a malformed
// request line, headers or body not received in time) were answered by Node with a bare status
// line and no body. Here they get the same JSON envelope as every other error (D28).
import { STATUS_CODES, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode } from './errors';

function codeFor(err: NodeJS.ErrnoException): ErrorCode {
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'headers_too_large';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'request_timeout';
  return 'bad_request';
}

export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // As Node's own handler: answer unless the connection is gone or a response has begun (a
    // body that arrives too slowly, past requestTimeout, is answered 408 here too).
    const res = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || res?.headersSent) {
      socket.destroy();
      return;
    }
    const code = codeFor(err);
    const { status, message } = ERROR_CODES[code];
    const body = JSON.stringify({ error: message, code, status });
    // Then closed from our side too, as Node does: a client that never closes must not keep the socket.
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => socket.destroy());
  });
}
