import * as grpc from '@grpc/grpc-js';
import { create, fromBinary } from '@bufbuild/protobuf';
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { encodeMessage } from '../binary-encoder';

/** grpc-js status codes, so callers need not import @grpc/grpc-js for them. */
export const GrpcStatus = grpc.status;
export type GrpcStatus = grpc.status;

type MethodShape = GenServiceMethods[string];
type In<M extends MethodShape> = MessageShape<M['input']>;
type Out<M extends MethodShape> = MessageShape<M['output']>;

type UnaryImpl<M extends MethodShape> = (
  request: In<M>,
  call: grpc.ServerUnaryCall<In<M>, Out<M>>,
) => Promise<MessageInitShape<M['output']>> | MessageInitShape<M['output']>;

type ServerStreamImpl<M extends MethodShape> = (
  request: In<M>,
  call: grpc.ServerWritableStream<In<M>, Out<M>>,
) => void | Promise<void>;

type BidiStreamImpl<M extends MethodShape> = (call: grpc.ServerDuplexStream<In<M>, Out<M>>) => void;

/**
 * Implementation object for a generated service: unary methods may return an init shape or a
 * promise of one; a bidi-streaming handler writes messages made with `create`.
 */
export type GrpcServiceImpl<T extends GenServiceMethods> = {
  [K in keyof T]: T[K]['methodKind'] extends 'unary'
    ? UnaryImpl<T[K]>
    : T[K]['methodKind'] extends 'server_streaming'
      ? ServerStreamImpl<T[K]>
      : T[K]['methodKind'] extends 'bidi_streaming'
        ? BidiStreamImpl<T[K]>
        : never;
};

function serializer(desc: DescMessage): (value: MessageShape<DescMessage>) => Buffer {
  return (value) => {
    const bytes = encodeMessage(desc, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(desc: DescMessage, undecodable?: (err: unknown) => unknown): (bytes: Buffer) => MessageShape<DescMessage> {
  if (!undecodable) return (bytes) => fromBinary(desc, bytes);
  return (bytes) => {
    try {
      return fromBinary(desc, bytes);
    } catch (err) {
      return undecodable(err) as MessageShape<DescMessage>;
    }
  };
}

export interface ServiceDefinitionOptions {
  /**
   * What a request that does not decode becomes (the handler sees it as `call.request`), for
   * unary and server-streaming methods. Without it grpc-js answers such a request INTERNAL
   * ("Error deserializing request"), a server fault to clients and balancers, for what is bad input.
   */
  undecodable?: (err: unknown) => unknown;
}

export function methodPath(service: DescService, method: DescMethod): string {
  return `/${service.typeName}/${method.name}`;
}

/**
 * A grpc-js ServiceDefinition built from a generated service descriptor, so
 * no .proto file is loaded at run time. Keys are the methods' localName
 * (`check`, `listSnapshots`), paths `/<package>.<Service>/<Method>`.
 */
export function grpcServiceDefinition(service: DescService, opts: ServiceDefinitionOptions = {}): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: methodPath(service, m),
      requestStream: m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming',
      responseStream: m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming',
      requestSerialize: serializer(m.input) as (v: unknown) => Buffer,
      // A streaming request is read by its handler: it gets grpc-js's answer, no sentinel among its messages.
      requestDeserialize: deserializer(m.input, m.methodKind === 'unary' || m.methodKind === 'server_streaming' ? opts.undecodable : undefined),
      responseSerialize: serializer(m.output) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(m.output),
      originalName: m.name,
    };
  }
  return def;
}

/** An Error carrying a gRPC status; thrown from a handler it becomes that status. */
export function grpcError(code: grpc.status, message: string): Error & { code: grpc.status; details: string } {
  return Object.assign(new Error(message), { code, details: message });
}

/**
 * The most a status message may take in the `grpc-message` trailer, percent-encoded as grpc-js
 * sends it. A header block Node cannot send (about 64 KiB once HPACK-encoded) is dropped without a
 * RST_STREAM: the client never gets a status and the stream stays open on both sides until the
 * connection ends. Other clients refuse far less (gRPC C-core's default metadata limit is 8 KiB).
 */
export const MAX_STATUS_MESSAGE_BYTES = 4096;

const ELLIPSIS = '…';

/** Lone UTF-16 surrogates become U+FFFD: encodeURI (grpc-js's encoding of grpc-message) throws on them. */
function wellFormed(text: string): string {
  return text.replace(/\p{Cs}/gu, '\ufffd');
}

/** `text` cut to at most `maxChars` code points (never inside a surrogate pair), ending in `…` when cut. */
export function clipText(text: string, maxChars: number): string {
  if (text.length <= maxChars) return wellFormed(text);
  let out = '';
  let n = 0;
  for (const cp of text) {
    if (n === maxChars) return wellFormed(out) + ELLIPSIS;
    out += cp;
    n++;
  }
  return wellFormed(out);
}

/**
 * A status message that fits the `grpc-message` trailer: well-formed, and at most `maxBytes`
 * once percent-encoded (MAX_STATUS_MESSAGE_BYTES), cut at a code point and ended with `…` if longer.
 */
export function boundedStatusMessage(text: string, maxBytes = MAX_STATUS_MESSAGE_BYTES): string {
  // Every UTF-16 unit encodes to at least one byte, so nothing past maxBytes + 1 units can stay.
  const s = wellFormed(text.length > maxBytes + 1 ? text.slice(0, maxBytes + 1) : text);
  if (encodeURI(s).length <= maxBytes) return s;
  const budget = maxBytes - encodeURI(ELLIPSIS).length;
  let out = '';
  let used = 0;
  for (const cp of s) {
    const n = encodeURI(cp).length;
    if (used + n > budget) break;
    out += cp;
    used += n;
  }
  return out + ELLIPSIS;
}

/** The status a thrown error becomes: its numeric gRPC `code` when it has one, INTERNAL otherwise; the message bounded. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const e = err as { code?: unknown; message?: unknown; details?: unknown } | null;
  const message = typeof e?.details === 'string' ? e.details : typeof e?.message === 'string' ? e.message : String(err);
  const code =
    typeof e?.code === 'number' && e.code >= 0 && e.code <= 16 ? (e.code as grpc.status) : grpc.status.INTERNAL;
  return { code, details: boundedStatusMessage(message) };
}

/** A request message that did not decode (addGrpcService with `undecodable: 'invalid_argument'`). */
class UndecodableRequest {
  constructor(readonly reason: string) {}
}

function undecodableStatus(req: UndecodableRequest, type: string): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: boundedStatusMessage(`request is not a valid ${type} message: ${clipText(req.reason, 256)}`) };
}

/**
 * Ends a streaming call with `status`. An 'error' event is what grpc-js turns into the call's
 * status; `call.destroy(err)` sent none, so the client waited for its deadline (or forever).
 */
function failStream(call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>, status: Partial<grpc.StatusObject>): void {
  call.emit('error', Object.assign(new Error(status.details ?? 'stream failed'), status));
}

export interface AddGrpcServiceOptions {
  /**
   * 'invalid_argument': a unary or server-streaming call whose request message does not decode
   * is answered INVALID_ARGUMENT ("request is not a valid <type> message: …") before the handler
   * runs. Default 'internal': grpc-js's own INTERNAL "Error deserializing request". Requests
   * of bidi-streaming methods always get grpc-js's answer.
   */
  undecodable?: 'internal' | 'invalid_argument';
}

/**
 * Registers `impl` for `service` on `server`. Unary results are passed
 * through `create`, so handlers may return plain init objects; a thrown error
 * with a numeric gRPC `code` keeps it, anything else becomes INTERNAL.
 */
export function addGrpcService<T extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<T>,
  impl: GrpcServiceImpl<T>,
  opts: AddGrpcServiceOptions = {},
): void {
  const desc = service as unknown as DescService;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const m of desc.methods) {
    const fn = (impl as Record<string, unknown>)[m.localName];
    if (typeof fn !== 'function') throw new TypeError(`no implementation for ${desc.typeName}.${m.name}`);
    if (m.methodKind === 'unary') {
      const unary = fn as (req: unknown, call: unknown) => unknown;
      handlers[m.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (call.request instanceof UndecodableRequest) return callback(undecodableStatus(call.request, m.input.typeName));
        Promise.resolve()
          .then(() => unary(call.request, call))
          .then(
            (res) => callback(null, create(m.output, res as MessageInitShape<DescMessage>)),
            (err: unknown) => callback(toServiceError(err)),
          );
      };
    } else if (m.methodKind === 'server_streaming') {
      const stream = fn as (req: unknown, call: grpc.ServerWritableStream<unknown, unknown>) => unknown;
      handlers[m.localName] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (call.request instanceof UndecodableRequest) {
          failStream(call, undecodableStatus(call.request, m.input.typeName));
          return;
        }
        Promise.resolve()
          .then(() => stream(call.request, call))
          .catch((err: unknown) => failStream(call, toServiceError(err)));
      };
    } else if (m.methodKind === 'bidi_streaming') {
      const bidi = fn as (call: grpc.ServerDuplexStream<unknown, unknown>) => void;
      handlers[m.localName] = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        try {
          bidi(call);
        } catch (err) {
          failStream(call, toServiceError(err));
        }
      };
    } else {
      throw new TypeError(`${desc.typeName}.${m.name}: ${m.methodKind} methods are not supported`);
    }
  }
  const undecodable = opts.undecodable === 'invalid_argument' ? (err: unknown) => new UndecodableRequest(err instanceof Error ? err.message : String(err)) : undefined;
  server.addService(grpcServiceDefinition(desc, undecodable ? { undecodable } : {}), handlers);
}

/** A client connection lives at most this long (then GOAWAY: the client dials again). */
export const MAX_CONNECTION_AGE_MS = 5 * 60_000;
/** What a GOAWAY'd connection's open calls get to finish (Decide lanes retire after 30 s). */
export const MAX_CONNECTION_AGE_GRACE_MS = 60_000;

/**
 * Server options matching the clients' keepalive: both sides ping idle
 * connections so a half-open TCP connection (peer host gone) is noticed within
 * ~40 s instead of on the next per-job Check call. Connections are also recycled
 * every MAX_CONNECTION_AGE_MS: grpc-js resolves a `dns:///` target again only when
 * a connection ends, so without it kernel pods added by a scale-up got no
 * traffic from clients that were already connected.
 */
export function grpcServerOptions(extra: grpc.ServerOptions = {}): grpc.ServerOptions {
  return {
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_connection_age_ms': MAX_CONNECTION_AGE_MS,
    'grpc.max_connection_age_grace_ms': MAX_CONNECTION_AGE_GRACE_MS,
    ...extra,
  };
}

/**
 * Binds `server` (plaintext) to a listen address (service-kit's parseAddr: host and port) and
 * resolves with the bound port. An IPv6 host goes in brackets (`[::]:8080`), as grpc-js reads it;
 * `${host}:${port}` lost them (P198).
 */
export function bindGrpcServer(server: grpc.Server, a: { host: string; port: number }): Promise<number> {
  const bind = (target: string): Promise<number> =>
    new Promise((resolve, reject) => {
      server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (!err) return resolve(port);
        // grpc-js says "No address added out of total 1 resolved errors: [listen EADDRINUSE: …]"
        const inUse = /EADDRINUSE/.test(err.message);
        reject(Object.assign(new Error(`gRPC cannot listen on ${target}: ${inUse ? 'address already in use' : err.message}`), inUse ? { code: 'EADDRINUSE' } : {}));
      });
    });
  // An empty host (service-kit's ANY_HOST, a `:port` address; P240): `[::]`, one dual-stack socket
  // taking IPv6 and IPv4, or `0.0.0.0` on a machine without IPv6, where `[::]` cannot bind. A port
  // in use is in use there too (P291: the second try only added a second error).
  if (a.host === '') return bind(`[::]:${a.port}`).catch((err: Error & { code?: string }) => (err.code === 'EADDRINUSE' ? Promise.reject(err) : bind(`0.0.0.0:${a.port}`)));
  return bind(a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);
}

/** What grpc-js logs through (its default is the console: bare `E <time> | v1.14.7 …` lines on stderr). */
export interface GrpcLogSink {
  debug(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Routes grpc-js's own log lines into the service's JSON log at debug (P291). At its default
 * verbosity it writes errors to stderr as plain text, e.g. a second line beside the service's own
 * for a port in use; every failure it logs also reaches the caller (a bind's error, a call's
 * status), which the service reports itself. `CORDUM_LOG_LEVEL=debug` shows them. Process-wide:
 * the last service to call it is the one whose log they go to.
 */
export function routeGrpcLogs(log: GrpcLogSink): void {
  const line = (...args: unknown[]): void => log.debug('grpc-js', { detail: args.map(String).join(' ') });
  grpc.setLogger({ error: line, info: line, debug: line });
}


/** How long a gRPC server's in-flight calls get to finish at shutdown before they are cut. */
export const GRPC_DRAIN_MS = 5_000;

/**
 * Stops `server` gracefully: no new calls, in-flight ones get `drainMs` to finish, then the rest
 * are cut (forceShutdown). Streams that stay open as long as their clients keep them (health
 * Watches, Decide streams) must be ended before, or they hold the drain for all of `drainMs`:
 * pass them as `endStreams`, called first. Resolves once the server has stopped.
 */
export function shutdownGrpcServer(server: grpc.Server, o: { endStreams?: () => void; drainMs?: number } = {}): Promise<void> {
  o.endStreams?.();
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, o.drainMs ?? GRPC_DRAIN_MS);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
