import { ErrorCode } from 'nats';

export type BusErrorCode = 'bus_publish_failed' | 'bus_closed' | 'bus_connect_failed' | 'bus_stream_failed' | 'bus_consumer_failed';

/** Typed bus error; callers match on `code`, never on the message. */
export class BusError extends Error {
  override readonly name = 'BusError';
  constructor(
    readonly code: BusErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isBusError(err: unknown, code?: BusErrorCode): err is BusError {
  return err instanceof BusError && (code === undefined || err.code === code);
}

/** `code` of a nats.js error (NatsError.code), or undefined. */
export function natsCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : typeof c === 'number' ? String(c) : undefined;
  }
  return undefined;
}

/** JetStream API err_code (e.g. 10058 stream name in use), or undefined. */
export function jsApiErrCode(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'api_error' in err) {
    const api = (err as { api_error?: { err_code?: unknown } }).api_error;
    return typeof api?.err_code === 'number' ? api.err_code : undefined;
  }
  return undefined;
}

/** JetStream API err_code of "JetStream system temporarily unavailable" (no meta leader yet). */
const JS_CLUSTER_NOT_AVAILABLE = 10008;
/**
 * JetStream API err_code of "no suitable peers for placement": a cluster whose meta leader is
 * elected but does not yet know every peer (CI saw it when the R3 stream was created right
 * after the cluster came up, cluster.spec, 2026-12-04).
 */
const JS_CLUSTER_NO_PEERS = 10005;

/**
 * A failure that passes by itself: no responder or no answer in time (the stream or the cluster's
 * leader is not there yet, 503 / TIMEOUT), a dropped connection, a cluster without a leader, or
 * one still gathering its peers. Callers bound their retries (a cluster that never gets enough
 * peers fails once the budget is spent).
 */
export function isTransientJsError(err: unknown): boolean {
  const code = natsCode(err);
  const api = jsApiErrCode(err);
  if (code === ErrorCode.NoResponders || code === ErrorCode.Timeout || code === ErrorCode.Disconnect || api === JS_CLUSTER_NOT_AVAILABLE || api === JS_CLUSTER_NO_PEERS) return true;
  // The server sends the peers error with its own text as the description; match that too.
  return api !== undefined && err instanceof Error && /no suitable peers for placement/i.test(err.message);
}
