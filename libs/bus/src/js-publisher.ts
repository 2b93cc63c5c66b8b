import { createInbox, ErrorCode, headers, NatsError, type Msg, type NatsConnection, type Subscription } from 'nats';
import { monoNow } from './mono';

/** How often expired publishes are failed with a timeout (their deadlines are 250–1,000 ms away). */
const SWEEP_MS = 50;

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
  deadline: number;
}

/**
 * JetStream publish as a plain PUB with a reply subject, answered on one wildcard inbox
 * subscription (issue 7). nats.js's `js.publish` builds a request object, a timer, a mux
 * entry and a parsed ack per call: ≈ 23 µs of CPU against ≈ 8 µs here (micro-benchmark of
 * 60,000 publishes, 64 in flight, docs/performance-history.md), and every job is published twice this
 * way (the gateway's submit, the worker's result).
 *
 * Same outcomes as `js.publish`, so publishWithRetry retries the same cases: the stored ack
 * resolves (a duplicate msg id too: the stream de-duplicates, D9); a 503 status reply (no
 * stream listens) rejects with ErrorCode.NoResponders; no reply by the deadline rejects with
 * ErrorCode.Timeout; a disconnect rejects what is in flight with ErrorCode.Disconnect (the reply
 * may never come); a JetStream API error in the ack rejects with the code nats.js gives it.
 */
export class JsPublisher {
  private readonly prefix = createInbox();
  private readonly pending = new Map<string, Pending>();
  private seq = 0;
  private sub: Subscription | undefined;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly nc: NatsConnection) {}

  publish(subject: string, data: Uint8Array, msgId: string | undefined, timeoutMs: number): Promise<void> {
    this.sub ??= this.nc.subscribe(`${this.prefix}.*`, { callback: (err, m) => { if (!err) this.onReply(m); } });
    const id = (this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER).toString(36);
    let h;
    if (msgId) {
      h = headers();
      h.set('Nats-Msg-Id', msgId);
    }
    // Throws at once on a closed connection, as js.publish does.
    this.nc.publish(subject, data, { reply: `${this.prefix}.${id}`, ...(h ? { headers: h } : {}) });
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, deadline: monoNow() + timeoutMs });
      this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS).unref();
    });
  }

  /** Fails every publish in flight (a disconnect: their replies may be lost; a close). */
  failAll(code: ErrorCode.Disconnect | ErrorCode.ConnectionClosed): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(NatsError.errorForCode(code));
    this.stopSweeper();
  }

  close(): void {
    this.failAll(ErrorCode.ConnectionClosed);
  }

  private onReply(m: Msg): void {
    const id = m.subject.slice(this.prefix.length + 1);
    const p = this.pending.get(id);
    if (!p) return; // timed out already, or a reply we never asked for
    this.pending.delete(id);
    if (this.pending.size === 0) this.stopSweeper();
    if (m.headers?.hasError) {
      p.reject(m.headers.code === 503 ? NatsError.errorForCode(ErrorCode.NoResponders) : new NatsError(m.headers.description || `status ${m.headers.code}`, String(m.headers.code)));
      return;
    }
    let ack: { stream?: string; error?: { code?: number; description?: string } };
    try {
      ack = m.json();
    } catch (err) {
      p.reject(new NatsError(`invalid publish ack: ${(err as Error).message}`, ErrorCode.JetStreamInvalidAck));
      return;
    }
    // nats.js's own mapping (checkJsErrorCode) is not exported, and the exported checkJsError
    // reads a status header, not the ack body, and names a 503 JetStreamNotEnabled where
    // js.publish says NoResponders: so the body's error is mapped here, as js.publish maps it.
    const e = ack.error;
    if (e && typeof e.code === 'number' && e.code >= 300) {
      const err = jsApiError(e.code, e.description ?? '');
      Object.assign(err, { api_error: e }); // what jsApiErrCode reads, as on nats.js's own errors
      p.reject(err);
      return;
    }
    if (!ack.stream) {
      p.reject(NatsError.errorForCode(ErrorCode.JetStreamInvalidAck));
      return;
    }
    p.resolve();
  }

  private sweep(): void {
    const now = monoNow();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      p.reject(NatsError.errorForCode(ErrorCode.Timeout));
    }
    if (this.pending.size === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}

/** nats.js's checkJsErrorCode for a code ≥ 300, so a rejection carries the code js.publish gives it. */
export function jsApiError(code: number, description: string): NatsError {
  const d = description.toLowerCase();
  switch (code) {
    case 404:
      return new NatsError(d, ErrorCode.JetStream404NoMessages);
    case 408:
      return new NatsError(d, ErrorCode.JetStream408RequestTimeout);
    case 409:
      return new NatsError(d, d.startsWith('idle heartbeats missed') ? ErrorCode.JetStreamIdleHeartBeat : ErrorCode.JetStream409);
    case 503:
      return NatsError.errorForCode(ErrorCode.JetStreamNotEnabled, new Error(description));
    default:
      return new NatsError(d || ErrorCode.Unknown, String(code));
  }
}
