import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import type { DescMessage, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { isIP } from 'node:net';
import { ProtocolError } from '../errors';
import { grpcServiceDefinition } from './server';

export interface GrpcCallOptions {
  /** Per-call deadline; the call fails with DEADLINE_EXCEEDED after it. */
  deadlineMs?: number;
  metadata?: grpc.Metadata | Record<string, string>;
  /** Queue the call until a connection is ready instead of failing fast (default false). */
  waitForReady?: boolean;
}

export interface GrpcClientOptions {
  credentials?: grpc.ChannelCredentials;
  /** Used when a call passes no deadlineMs; unset = no deadline. */
  defaultDeadlineMs?: number;
  channelOptions?: grpc.ChannelOptions;
}

export type GrpcClient<T extends GenServiceMethods> = {
  [K in keyof T]: T[K]['methodKind'] extends 'unary'
    ? (request: MessageInitShape<T[K]['input']>, opts?: GrpcCallOptions) => Promise<MessageShape<T[K]['output']>>
    : T[K]['methodKind'] extends 'server_streaming'
      ? (request: MessageInitShape<T[K]['input']>, opts?: GrpcCallOptions) => grpc.ClientReadableStream<MessageShape<T[K]['output']>>
      : T[K]['methodKind'] extends 'bidi_streaming'
        ? (opts?: Omit<GrpcCallOptions, 'deadlineMs'>) => grpc.ClientDuplexStream<MessageShape<T[K]['input']>, MessageShape<T[K]['output']>>
        : never;
} & {
  /** Resolves once a channel is READY, rejects after `deadlineMs`. */
  waitForReady(deadlineMs: number): Promise<void>;
  /** Closes every channel; idempotent. */
  close(): void;
  /** The grpc-js targets in use (one per channel). */
  readonly targets: readonly string[];
  /** READY if any channel is, TRANSIENT_FAILURE if every channel is, else the first channel's state. */
  connectivity(): grpc.connectivityState;
  /** Calls `listener` with each new state of any of its channels, until close(). */
  onConnectivity(listener: (state: grpc.connectivityState) => void): void;
};

/** The entries of a D23 address: one for `host:port` or `dns:///...`, one per kernel of a comma list. Not validated. */
export function splitGrpcAddress(address: string): string[] {
  return address
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * D23 address forms:
 *  - `host:port`            → one channel, grpc-js DNS resolver
 *  - `dns:///host:port`     → as given (every A record becomes a backend)
 *  - `a:1,b:2` IP literals  → one channel `ipv4:a:1,b:2` (or `ipv6:`) with grpc-js round_robin
 *  - `a:1,b:2` with names   → one channel per entry, round robin in the client
 *    (grpc-js's static `ipv4:` resolver cannot resolve host names).
 */
export function parseGrpcAddress(address: string): string[] {
  const parts = splitGrpcAddress(address);
  if (parts.length === 0) throw new ProtocolError('invalid_address', `empty gRPC address ${JSON.stringify(address)}`);
  if (parts.length === 1) {
    const one = parts[0] as string;
    // dns:///host:port (or dns://authority/host:port) as given; grpc-js's other schemes for experts.
    if (/^(ipv4|ipv6|unix|unix-abstract):./.test(one)) return [one];
    const dns = /^dns:(?:\/\/[^/]*\/)?(.+)$/.exec(one);
    if (dns) hostPort(dns[1] as string, address);
    else if (one.includes('://')) throw new ProtocolError('invalid_address', `use host:port or dns:///host:port, not a URL: ${JSON.stringify(one)}`);
    else hostPort(one, address);
    return [one];
  }
  const hosts = parts.map((p) => {
    if (p.includes('://') || p.startsWith('ipv4:') || p.startsWith('ipv6:')) {
      throw new ProtocolError('invalid_address', `a comma list takes plain host:port entries, got ${JSON.stringify(p)}`);
    }
    return hostPort(p, address);
  });
  if (hosts.every((h) => isIP(h) === 4)) return [`ipv4:${parts.join(',')}`];
  if (hosts.every((h) => isIP(h) === 6)) return [`ipv6:${parts.join(',')}`];
  return parts;
}

/** The host of `host:port` or `[v6]:port` with a port 1–65535; throws naming the entry otherwise. */
function hostPort(p: string, address: string): string {
  const m = /^(?:\[([^\]]+)\]|([^:\s/]+)):(\d{1,5})$/.exec(p);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) {
    throw new ProtocolError('invalid_address', `bad host:port ${JSON.stringify(p)}${p === address ? '' : ` in ${JSON.stringify(address)}`} (port 1-65535)`);
  }
  return m[1] ?? m[2] ?? '';
}

const ROUND_ROBIN = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });

function channelOptions(extra: grpc.ChannelOptions | undefined): grpc.ChannelOptions {
  return {
    // The scheduler calls Check per job: keep the connection warm and notice a
    // dead peer between jobs rather than on the next call.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    // A restarted kernel should be picked up within seconds, not minutes.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 5_000,
    // A dns:/// name is looked up again when a connection drops, by default at most once in 30 s:
    // in a rolling restart of the kernels behind a headless Service the clients then kept the
    // stopped pods' addresses and, once the last old one stopped, had no kernel for up to 30 s.
    'grpc.dns_min_time_between_resolutions_ms': 1_000,
    'grpc.service_config': ROUND_ROBIN,
    ...extra,
  };
}

function toMetadata(md: GrpcCallOptions['metadata']): grpc.Metadata {
  if (md instanceof grpc.Metadata) return md;
  const out = new grpc.Metadata();
  for (const [k, v] of Object.entries(md ?? {})) out.set(k, v);
  return out;
}

/** A typed promise client for a generated service (unary and server-streaming methods). */
export function grpcClientFor<T extends GenServiceMethods>(
  service: GenService<T>,
  address: string,
  opts: GrpcClientOptions = {},
): GrpcClient<T> {
  const desc = service as unknown as DescService;
  const def = grpcServiceDefinition(desc);
  const targets = parseGrpcAddress(address);
  const creds = opts.credentials ?? grpc.credentials.createInsecure();
  const channels = targets.map((t) => new grpc.Client(t, creds, channelOptions(opts.channelOptions)));
  let next = 0;
  let closed = false;

  // Client-side round robin for host-name lists: prefer channels that are not
  // in TRANSIENT_FAILURE so one dead replica does not fail every Nth call.
  const pick = (): grpc.Client => {
    const n = channels.length;
    for (let i = 0; i < n; i++) {
      const c = channels[(next + i) % n] as grpc.Client;
      const state = c.getChannel().getConnectivityState(true);
      if (state !== grpc.connectivityState.TRANSIENT_FAILURE || i === n - 1) {
        next = (next + i + 1) % n;
        return c;
      }
    }
    return channels[0] as grpc.Client;
  };

  const callOptions = (o: GrpcCallOptions | undefined): grpc.CallOptions => {
    const deadlineMs = o?.deadlineMs ?? opts.defaultDeadlineMs;
    const co: grpc.CallOptions = {};
    if (deadlineMs !== undefined) co.deadline = Date.now() + deadlineMs;
    return co;
  };

  const client: Record<string, unknown> = {};
  for (const m of desc.methods) {
    const d = def[m.localName] as grpc.MethodDefinition<unknown, unknown>;
    const toRequest = (req: unknown): unknown => create(m.input, req as MessageInitShape<DescMessage>);
    if (m.methodKind === 'unary') {
      client[m.localName] = (req: unknown, o?: GrpcCallOptions) =>
        new Promise((resolve, reject) => {
          const ch = pick();
          const co = callOptions(o);
          const md = toMetadata(o?.metadata);
          if (o?.waitForReady) md.setOptions({ waitForReady: true });
          ch.makeUnaryRequest(d.path, d.requestSerialize, d.responseDeserialize, toRequest(req), md, co, (err, res) =>
            err ? reject(err) : resolve(res),
          );
        });
    } else if (m.methodKind === 'server_streaming') {
      client[m.localName] = (req: unknown, o?: GrpcCallOptions) => {
        const md = toMetadata(o?.metadata);
        if (o?.waitForReady) md.setOptions({ waitForReady: true });
        return pick().makeServerStreamRequest(d.path, d.requestSerialize, d.responseDeserialize, toRequest(req), md, callOptions(o));
      };
    } else if (m.methodKind === 'bidi_streaming') {
      // No deadline: a bidi stream here is long-lived and times its messages itself.
      client[m.localName] = (o?: GrpcCallOptions) => {
        const md = toMetadata(o?.metadata);
        if (o?.waitForReady) md.setOptions({ waitForReady: true });
        return pick().makeBidiStreamRequest(d.path, d.requestSerialize, d.responseDeserialize, md, {});
      };
    }
  }
  client.targets = targets;
  client.connectivity = (): grpc.connectivityState => {
    const states = channels.map((c) => c.getChannel().getConnectivityState(false));
    if (states.includes(grpc.connectivityState.READY)) return grpc.connectivityState.READY;
    if (states.every((st) => st === grpc.connectivityState.TRANSIENT_FAILURE)) return grpc.connectivityState.TRANSIENT_FAILURE;
    return states[0] ?? grpc.connectivityState.SHUTDOWN;
  };
  client.onConnectivity = (listener: (state: grpc.connectivityState) => void): void => {
    for (const c of channels) {
      const ch = c.getChannel();
      const watch = (from: grpc.connectivityState): void => {
        ch.watchConnectivityState(from, Infinity, () => {
          const state = ch.getConnectivityState(false);
          if (state === grpc.connectivityState.SHUTDOWN) return;
          listener(state);
          watch(state);
        });
      };
      watch(ch.getConnectivityState(false));
    }
  };
  client.waitForReady = (deadlineMs: number) =>
    new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + deadlineMs;
      let pending = channels.length;
      let done = false;
      for (const c of channels) {
        c.waitForReady(deadline, (err) => {
          if (done) return;
          if (!err) {
            done = true;
            resolve();
          } else if (--pending === 0) {
            done = true;
            reject(err);
          }
        });
      }
    });
  client.close = () => {
    if (closed) return;
    closed = true;
    for (const c of channels) c.close();
  };
  return client as GrpcClient<T>;
}
