// P232: a gateway stopping (SIGTERM in a rolling restart) drains its clients instead of cutting
// them. Before: /readyz answered 200 until the HTTP listener closed, an open gRPC health Watch
// held the gRPC shutdown for 5 s, and keep-alive answers during the drain kept their connection
// open, so busy keep-alive clients were cut with ECONNRESET when the drain ended.
import { request, Agent } from 'node:http';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import type * as grpc from '@grpc/grpc-js';
import { GrpcStatus, Health, ServingStatus, grpcClientFor, type HealthCheckResponse } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { KEYS, startRig, type Rig } from './harness';

let rig: Rig;

beforeAll(async () => {
  rig = await startRig();
});

afterAll(async () => {
  await rig?.stop();
});

interface Answer {
  status: number;
  connection: string | undefined;
  body: string;
}

/** A request that failed, and whether it was sent on a connection an earlier request had used. */
class Failed extends Error {
  constructor(readonly code: string, readonly reused: boolean) {
    super(code);
  }
}

/** GET `path` on `agent` (keep-alive) or a new connection; rejects with Failed. */
function get(port: number, path: string, agent: Agent | false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
      res.on('error', (err: NodeJS.ErrnoException) => reject(new Failed(err.code ?? err.message, req.reusedSocket)));
    });
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Failed(err.code ?? err.message, req.reusedSocket)));
    req.end();
  });
}

it('goes unready at once, ends health Watches with OK, and closes keep-alive connections after their answers instead of resetting them', async () => {
  const gw = rig.gateway;
  const port = gw.httpPort;
  expect((await get(port, '/readyz', false)).status).toBe(200);

  // A health Watch, as a gRPC load balancer keeps one.
  const health = grpcClientFor(Health, `127.0.0.1:${gw.grpcPort}`);
  const watched: ServingStatus[] = [];
  const watch = health.watch({ service: '' });
  const serving = new Promise<void>((resolve) => watch.on('data', (m: HealthCheckResponse) => { watched.push(m.status); resolve(); }));
  const watchEnd = new Promise<number>((resolve) => watch.on('status', (s: grpc.StatusObject) => resolve(s.code)));
  watch.on('error', () => undefined);
  await serving;

  // Four keep-alive clients, each sending its next request as soon as the last is answered.
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  let stopping = false;
  let stopped = false;
  const afterStop: Answer[] = [];
  const failures: string[] = [];
  const answered = new Set<number>();
  const client = async (i: number): Promise<void> => {
    while (!stopped) {
      const sentWhileStopping = stopping;
      try {
        const a = await get(port, '/readyz', agent);
        if (sentWhileStopping) afterStop.push(a);
        else answered.add(i);
      } catch (err) {
        // A new connection the closing listener refused or reset is the client's to retry
        // elsewhere (a load balancer stopped sending it any); a used keep-alive one cut under a
        // request is what this is about.
        if (err instanceof Failed && err.reused) failures.push(err.code);
        return;
      }
    }
  };
  const clients = Array.from({ length: 4 }, (_, i) => client(i));
  await waitFor(() => answered.size === 4, 10_000, { message: 'each client answered on its connection', intervalMs: 5 });
  // A stream client that does not answer the close: the gateway gives it 1 s before cutting it,
  // so the HTTP listener is still open for a moment after stop() begins.
  const slow = new WebSocket(`ws://127.0.0.1:${port}/api/v1/stream`, { headers: { 'X-API-Key': KEYS.admin } });
  await new Promise<void>((resolve, reject) => slow.once('open', () => resolve()).once('error', reject));
  (slow as unknown as { _socket: Socket })._socket.pause();

  stopping = true;
  await gw.stop();
  stopped = true;
  await Promise.all(clients);
  agent.destroy();
  health.close();
  slow.terminate();

  expect(await watchEnd).toBe(GrpcStatus.OK);
  expect(watched).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
  expect(failures).toEqual([]);
  // Every request sent once stop() began was answered unready, and its connection closed after it.
  expect(afterStop.length).toBeGreaterThan(0);
  expect(afterStop.filter((a) => a.connection !== 'close' || a.status !== 503 || !a.body.includes('"serving":false'))).toEqual([]);
}, 30_000);
