// One socket write per event-loop turn for a NATS connection (issue 7).
//
// nats.js buffers what a connection sends and writes it out from a microtask
// queued by the first send into an empty buffer. Every I/O callback that
// publishes (a Redis reply that ends a handler, a delivered message, a gRPC
// answer) therefore costs its own socket write, and on loopback a write runs
// the receiver's TCP path inside the sender's system call. Deferring that
// write with setImmediate, as ioredis's auto-pipelining does for Redis, sends
// everything the callbacks of one turn published in one write, right after
// that turn's I/O. The buffer's own limit (`pendingLimit`) still flushes at
// once, and nothing else about sending changes.
import type { NatsConnection } from 'nats';

/** The part of nats.js's (2.29) ProtocolHandler this touches; not public API, so checked at run time. */
interface ProtocolHandler {
  outbound: { size(): number; fill(buf: Uint8Array, ...payloads: Uint8Array[]): void };
  pendingLimit: number;
  flushPending(): void;
  sendCommand(cmd: string | Uint8Array, ...payloads: Uint8Array[]): void;
  close(): Promise<void>;
}

function protocolOf(nc: NatsConnection): ProtocolHandler | null {
  const p = (nc as unknown as { protocol?: Partial<ProtocolHandler> }).protocol;
  if (!p || typeof p.sendCommand !== 'function' || typeof p.flushPending !== 'function' || typeof p.close !== 'function' || typeof p.pendingLimit !== 'number') return null;
  const out = p.outbound;
  if (!out || typeof out.size !== 'function' || typeof out.fill !== 'function') return null;
  return p as ProtocolHandler;
}

const encoder = new TextEncoder();

/**
 * Makes `nc` write what it sends once per event-loop turn instead of once per microtask
 * checkpoint. Returns false, changing nothing, when the client's internals are not the
 * shape this was written against (another nats.js version): sends then behave as before.
 */
export function flushOncePerTurn(nc: NatsConnection): boolean {
  const p = protocolOf(nc);
  if (!p) return false;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    p.flushPending();
  };
  p.sendCommand = (cmd, ...payloads) => {
    p.outbound.fill(typeof cmd === 'string' ? encoder.encode(cmd) : cmd, ...payloads);
    if (p.outbound.size() >= p.pendingLimit) p.flushPending();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  // close() drops the socket at once; what was sent before it still goes out, as it did
  // when the write was a microtask away.
  const close = p.close.bind(p);
  p.close = () => {
    p.flushPending();
    return close();
  };
  return true;
}

/**
 * A count of the times nats.js emptied `nc`'s send buffer (it does at every connection attempt,
 * rejecting the flushes then waiting): a message published before that is gone, and a PING sent
 * after it is answered by the new connection. Null, changing nothing, when the client is not the
 * nats.js this was written against. Bus.flush() compares it across its deferral (P158).
 */
export function sendBufferResets(nc: NatsConnection): (() => number) | null {
  const p = (nc as unknown as { protocol?: { resetOutbound?: unknown } }).protocol;
  if (!p || typeof p.resetOutbound !== 'function') return null;
  const reset = (p.resetOutbound as () => void).bind(p);
  let resets = 0;
  p.resetOutbound = () => {
    resets += 1;
    reset();
  };
  return () => resets;
}
