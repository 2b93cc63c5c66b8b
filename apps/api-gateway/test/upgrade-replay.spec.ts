// P282: an upgrade offer pipelined behind a request still being answered waits for that response
// before it is replayed as a plain request (P93). A client that reset the connection meanwhile
// left its socket in the waiting set for good: the pending response never emits 'finish' on a
// destroyed socket. On a plain Node http server, with the gateway's replay function.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { waitFor } from '@cordum/testing';
import { replayWithoutUpgrade } from '../src/stream/ws';

let server: Server;
let port = 0;
const waiting = new Set<Duplex>();
const held: ServerResponse[] = [];
let answered = 0;

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/slow') held.push(res);
    else {
      answered++;
      res.end('ok');
    }
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => replayWithoutUpgrade(server, req, socket, head, waiting));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of waiting) s.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const offer = 'GET /after HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n';

it('a waiting offer is replayed once the response ahead of it finishes', async () => {
  const sock = connect(port, '127.0.0.1', () => sock.write(`GET /slow HTTP/1.1\r\nHost: x\r\n\r\n${offer}`));
  let data = '';
  sock.on('data', (d: Buffer) => (data += d.toString()));
  await waitFor(() => waiting.size === 1 && held.length === 1, 5_000, { message: 'the offer waits behind /slow' });
  held.shift()?.end('slow');
  await waitFor(() => (data.match(/HTTP\/1\.1 200/g) ?? []).length === 2, 5_000, { message: 'both answered' });
  expect(waiting.size).toBe(0);
  expect(answered).toBe(1);
  sock.destroy();
});

it('a client that resets while its offer waits leaves nothing behind once the response ahead ends', async () => {
  const sock = connect(port, '127.0.0.1', () => sock.write(`GET /slow HTTP/1.1\r\nHost: x\r\n\r\n${offer}`));
  sock.on('error', () => undefined);
  await waitFor(() => waiting.size === 1 && held.length === 1, 5_000, { message: 'the offer waits behind /slow' });
  sock.resetAndDestroy();
  const res = held.shift();
  await waitFor(() => res?.destroyed === true, 5_000, { message: 'the server saw the reset' });
  res?.end('too late');
  await waitFor(() => waiting.size === 0, 5_000, { message: 'the reset socket leaves the waiting set' });
  expect(answered).toBe(1);
});
