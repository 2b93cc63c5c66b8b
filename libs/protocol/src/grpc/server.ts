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
   * What a request that does not decode becomes (the handler sees it as `call.request`).
   * Without it grpc-js answers such a request INTERNAL ("Error deserializing request"), a
   * server fault to clients and balancers, for what is bad input.
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
      requestDeserialize: deserializer(m.input, opts.undecodable),
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

/** The status a thrown error becomes: its numeric gRPC `code` when it has one, INTERNAL otherwise. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const e = err as { code?: unknown; message?: unknown; details?: unknown } | null;
  const message = typeof e?.details === 'string' ? e.details : typeof e?.message === 'string' ? e.message : String(err);
  const code =
    typeof e?.code === 'number' && e.code >= 0 && e.code <= 16 ? (e.code as grpc.status) : grpc.status.INTERNAL;
  return { code, details: message };
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
): void {
  const desc = service as unknown as DescService;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const m of desc.methods) {
    const fn = (impl as Record<string, unknown>)[m.localName];
    if (typeof fn !== 'function') throw new TypeError(`no implementation for ${desc.typeName}.${m.name}`);
    if (m.methodKind === 'unary') {
      const unary = fn as (req: unknown, call: unknown) => unknown;
      handlers[m.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
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
        Promise.resolve()
          .then(() => stream(call.request, call))
          .catch((err: unknown) => call.destroy(Object.assign(new Error('stream failed'), toServiceError(err))));
      };
    } else if (m.methodKind === 'bidi_streaming') {
      const bidi = fn as (call: grpc.ServerDuplexStream<unknown, unknown>) => void;
      handlers[m.localName] = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        try {
          bidi(call);
        } catch (err) {
          call.destroy(Object.assign(new Error('stream failed'), toServiceError(err)));
        }
      };
    } else {
      throw new TypeError(`${desc.typeName}.${m.name}: ${m.methodKind} methods are not supported`);
    }
  }
  server.addService(grpcServiceDefinition(desc), handlers);
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
