// A WebSocket stream client for the gateway's stream specs: every message parsed, the close kept,
// and a refused upgrade rejected as `HTTP <status> <JSON body>`.
import WebSocket from 'ws';

export interface StreamClient {
  ws: WebSocket;
  events: Record<string, unknown>[];
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens `url` (ws://…/api/v1/stream); the socket is pushed onto `track` so a spec can terminate what it opened. */
export function openStream(url: string, opts: { headers?: Record<string, string>; protocols?: string[] }, track: WebSocket[]): Promise<StreamClient> {
  const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers });
  track.push(ws);
  const events: Record<string, unknown>[] = [];
  ws.on('message', (d: Buffer) => events.push(JSON.parse(d.toString()) as Record<string, unknown>));
  const closed = new Promise<{ code: number; reason: string }>((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, events, closed }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => reject(new Error(`HTTP ${res.statusCode} ${body}${res.headers['retry-after'] ? ` retry-after=${res.headers['retry-after']}` : ''}`)));
    });
    ws.once('error', reject);
  });
}
