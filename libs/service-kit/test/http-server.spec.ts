import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import { createExpressServer } from '../src';

interface Seen {
  atArrival: object | null;
  inHandler: object | null;
  app: unknown;
  header: string | undefined;
}

function appRecording(seen: Seen): Express {
  const app = express();
  app.use(express.json());
  app.post('/echo', (req, res) => {
    seen.inHandler = Object.getPrototypeOf(req) as object;
    seen.app = req.app;
    seen.header = req.get('x-probe');
    res.status(201).json({ got: (req.body as { v?: unknown }).v });
  });
  return app;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

async function post(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-probe': 'p1', connection: 'close' }, body: JSON.stringify({ v: 42 }) });
  return { status: res.status, body: await res.json() };
}

describe('createExpressServer', () => {
  const seen: Seen = { atArrival: null, inHandler: null, app: null, header: undefined };
  const app = appRecording(seen);
  let server: Server;
  let url: string;

  beforeAll(async () => {
    server = createExpressServer(app);
    // Runs before express: the prototype the server gave the request, not the one express set.
    server.prependListener('request', (req: IncomingMessage) => {
      seen.atArrival = Object.getPrototypeOf(req) as object;
    });
    url = await listen(server);
  });

  afterAll(async () => {
    await close(server);
  });

  it('creates requests with the app prototype, so express has nothing to re-parent', async () => {
    const { status, body } = await post(url);
    expect(status).toBe(201);
    expect(body).toEqual({ got: 42 });
    expect(seen.atArrival).toBe(app.request);
    expect(seen.inHandler).toBe(app.request);
    expect(seen.app).toBe(app);
    expect(seen.header).toBe('p1');
  });

  it('still serves requests that reach the app through another server', async () => {
    const other = createServer(app);
    const otherUrl = await listen(other);
    try {
      const { status, body } = await post(otherUrl);
      expect(status).toBe(201);
      expect(body).toEqual({ got: 42 });
      expect(seen.inHandler).toBe(app.request);
    } finally {
      await close(other);
    }
  });
});
