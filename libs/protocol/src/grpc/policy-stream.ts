// SafetyKernel Check and Evaluate over the Decide stream (P17). A unary call in
// grpc-js costs an HTTP/2 stream, headers, trailers and a deadline on both
// sides: ≈ 370 µs of CPU per call on the bench machine, against ≈ 90 µs for a
// message on a stream that is already open. Every job is checked twice, so the
// gateway (Evaluate) and the scheduler (Check) send their calls as messages on
// a few long-lived streams, each request with an id its answer repeats.
//
// What a caller sees does not change: one promise per call, the same deadline,
// the answer or an error carrying a gRPC status code. Rules that keep it so:
// - the kernel answers every request it accepted before it ends a stream, so a
//   request still waiting when a stream ends cleanly was never evaluated and is
//   sent again once on a fresh stream (a kernel shutting down, a stream retired);
// - a stream that fails (kernel killed, connection lost) fails the requests on
//   it with its status, as the unary calls in flight would have failed; with a
//   comma list of kernels they are sent once to another kernel instead
//   (Evaluate records nothing; Check records velocity once per job, D20);
// - a kernel without Decide (UNIMPLEMENTED) gets unary calls, probed again
//   after a minute, so clients can be upgraded before kernels;
// - each kernel of a comma list has its own channel and streams; one that
//   misses a deadline or loses a stream is suspect: no new request goes to it
//   while another kernel is usable, until a gRPC health probe answers SERVING;
//   with waitForReady, one whose channel reports TRANSIENT_FAILURE while another
//   is usable is suspect too, and its waiting streams are cancelled (resent).
//   A `host:port` or `dns:///` target is one channel balanced by grpc-js; its
//   streams are retired after `streamMaxAgeMs` so new ones spread over what the
//   name resolves to.
import * as grpc from '@grpc/grpc-js';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  PolicyCheckRequestSchema,
  PolicyMethod,
  PolicyStreamRequestSchema,
  PolicyStreamResponseSchema,
  SafetyKernel,
  type PolicyCheckRequest,
  type PolicyCheckResponse,
  type PolicyCheckResponseSchema,
  type PolicyStreamRequest,
  type PolicyStreamResponse,
} from '../gen/cordum/v1/safety_pb';
import { encodeMessage } from '../binary-encoder';
import { grpcClientFor, parseGrpcAddress, splitGrpcAddress, type GrpcClient, type GrpcClientOptions } from './client';
import { Health } from '../gen/grpc/health/v1/health_pb';
import { ServingStatus } from './health';
import { grpcError, toServiceError } from './server';

export type PolicyCheckInit = MessageInitShape<typeof PolicyCheckRequestSchema>;
type PolicyAnswer = MessageInitShape<typeof PolicyCheckResponseSchema>;

/** An Error shaped like grpc-js's ServiceError, so callers read `code` the same way for both paths. */
export type PolicyCallError = Error & { code: grpc.status; details: string };

function statusError(code: grpc.status, details: string): PolicyCallError {
  return Object.assign(new Error(`${code} ${grpc.status[code] ?? 'UNKNOWN'}: ${details}`), { code, details });
}

export interface PolicyClientOptions extends GrpcClientOptions {
  /** Queue calls until a connection is ready (up to each call's deadline) instead of failing fast. */
  waitForReady?: boolean;
  /** Streams kept open per client, used in turn (default 4, the most kernel replicas CONTRACT §1 runs). */
  streams?: number;
  /** A stream older than this takes no new request and is closed once answered (default 30 s). */
  streamMaxAgeMs?: number;
  /** After UNIMPLEMENTED, unary calls for this long before Decide is tried again (default 60 s). */
  unaryFallbackMs?: number;
}

export interface PolicyClient {
  check(req: PolicyCheckInit, deadlineMs: number): Promise<PolicyCheckResponse>;
  evaluate(req: PolicyCheckInit, deadlineMs: number): Promise<PolicyCheckResponse>;
  /** How the next call goes: on a Decide stream, or unary (a kernel without Decide). */
  readonly transport: 'stream' | 'unary';
  /** Kernels of a comma list that take no new request until their health probe answers SERVING. */
  readonly suspects: readonly string[];
  /** Fails every waiting call with CANCELLED and closes the channels; idempotent. */
  close(): void;
}

interface Backend {
  target: string;
  client: GrpcClient<SafetyKernelMethods>;
  slots: (Lane | undefined)[];
  nextSlot: number;
  /** Set by a missed deadline, a failed or drained stream; cleared by a SERVING health probe. */
  suspect: boolean;
  probe?: NodeJS.Timeout;
  /** grpc.health.v1 client on the same target, made by the first probe. */
  health?: GrpcClient<HealthMethods>;
}

interface Lane {
  backend: Backend;
  call: grpc.ClientDuplexStream<PolicyStreamRequest, PolicyStreamResponse>;
  pending: Map<number, Waiter>;
  bornAt: number;
  retired: boolean;
  ended: boolean;
  /** Cancelled by this client with nothing waiting on it (P289): its CANCELLED end says nothing of the kernel. */
  dropped: boolean;
}

interface Waiter {
  msg: PolicyStreamRequest;
  resolve: (res: PolicyCheckResponse) => void;
  reject: (err: PolicyCallError) => void;
  timer: NodeJS.Timeout;
  deadlineAt: number;
  lane?: Lane;
  resent: boolean;
}

type SafetyKernelMethods = typeof SafetyKernel extends { method: infer M } ? M : never;
type HealthMethods = typeof Health extends { method: infer M } ? M : never;

/**
 * Start of the UNAVAILABLE message a kernel answers Check and Evaluate with before its
 * policy is complete (P48): it evaluated nothing, so the client asks another kernel.
 */
export const KERNEL_NOT_READY = 'kernel not ready';

/**
 * What a failed kernel call may tell an API caller or a job record (P222): the gRPC status name,
 * plus the kernel's own `kernel not ready…` reason (about the policy, which operators and the
 * callers' admins write). grpc-js's own text names the kernel's address (`connect ECONNREFUSED
 * 10.0.3.7:50051`, a DNS name): that stays in the server's logs.
 */
export function publicKernelError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'number') return 'no answer';
  const name = grpc.status[code] ?? `code ${code}`;
  const details = (err as { details?: unknown }).details;
  return typeof details === 'string' && details.startsWith(KERNEL_NOT_READY) ? `${name}: ${details}` : name;
}

/** How long a suspect kernel waits between health probes. */
export const SUSPECT_PROBE_MS = 2_000;
const PROBE_DEADLINE_MS = 1_000;

/**
 * One target per kernel of a comma list (so the client can tell them apart and
 * leave a stalled one), one for `host:port` or `dns:///` (grpc-js balances those).
 */
function policyTargets(address: string): string[] {
  parseGrpcAddress(address); // validates every D23 form, with its error messages
  return splitGrpcAddress(address);
}

export function createPolicyClient(address: string, opts: PolicyClientOptions = {}): PolicyClient {
  const targets = policyTargets(address);
  const lanesPerBackend = Math.max(1, Math.ceil((opts.streams ?? 4) / targets.length));
  const backends: Backend[] = targets.map((target) => ({
    target,
    client: grpcClientFor<SafetyKernelMethods>(SafetyKernel, target, opts),
    slots: new Array<Lane | undefined>(lanesPerBackend).fill(undefined),
    nextSlot: 0,
    suspect: false,
  }));
  const maxAgeMs = opts.streamMaxAgeMs ?? 30_000;
  const fallbackMs = opts.unaryFallbackMs ?? 60_000;
  const waitForReady = opts.waitForReady ?? false;
  const lanes = new Set<Lane>();
  let unaryUntil = 0;
  let nextBackend = 0;
  let nextId = 0;
  let closed = false;

  // A kernel that missed a deadline or lost its stream takes no new request while another
  // kernel is usable, until a health probe on its address answers SERVING: a stalled
  // (SIGSTOPped, overloaded) replica costs the requests already on it, not one in N of all
  // later ones until keepalive gives up on its connection.
  const probe = (b: Backend): void => {
    b.probe = setTimeout(() => {
      b.probe = undefined;
      if (closed) return;
      b.health ??= grpcClientFor<HealthMethods>(Health, b.target);
      b.health.check({ service: SafetyKernel.typeName }, { deadlineMs: PROBE_DEADLINE_MS }).then(
        (res) => {
          if (res.status === ServingStatus.SERVING) b.suspect = false;
          else probe(b);
        },
        () => probe(b),
      );
    }, SUSPECT_PROBE_MS);
    b.probe.unref();
  };
  const markSuspect = (b: Backend): void => {
    if (b.suspect || closed || backends.length < 2) return;
    b.suspect = true;
    probe(b);
  };

  const usable = (b: Backend): boolean => !b.suspect && b.client.connectivity() !== grpc.connectivityState.TRANSIENT_FAILURE;

  // With waitForReady, grpc-js does not fail a stream whose kernel refuses connections (killed
  // while this client had no stream to it): the stream waits, never started, and its requests
  // wait out their deadlines. When its channel reports TRANSIENT_FAILURE and another kernel is
  // usable, the kernel is suspect and its streams are cancelled, so what waits on them is sent
  // to that kernel (the rule for a failed stream). With no other kernel usable they keep
  // waiting for this one to come back, up to their deadlines.
  if (waitForReady && backends.length > 1) {
    for (const b of backends) {
      b.client.onConnectivity((state) => {
        if (closed || state !== grpc.connectivityState.TRANSIENT_FAILURE) return;
        if (!backends.some((o) => o !== b && usable(o))) return;
        markSuspect(b);
        for (const lane of lanes) if (lane.backend === b && !lane.ended) lane.call.cancel();
      });
    }
  }
  /** Round robin over usable kernels; when none is, over all of them. `avoid` only if another exists. */
  const pickBackend = (avoid?: Backend): Backend => {
    const n = backends.length;
    for (const ok of [(b: Backend) => b !== avoid && usable(b), (b: Backend) => b !== avoid, () => true]) {
      for (let i = 0; i < n; i++) {
        const b = backends[(nextBackend + i) % n] as Backend;
        if (ok(b)) {
          nextBackend = (nextBackend + i + 1) % n;
          return b;
        }
      }
    }
    return backends[0] as Backend;
  };

  /**
   * A retired stream nobody waits on any more is cancelled (P289). Half-closed, it waited for the
   * kernel to end it; with waitForReady and the kernel unreachable, grpc-js keeps such a stream
   * queued for good (a half-close does not end a call that never started), so each missed
   * deadline left one more behind, and when the kernel came back every one of them started at
   * once and sent it requests nobody waited for.
   */
  const dropIfIdle = (lane: Lane): void => {
    if (!lane.retired || lane.ended || lane.dropped || lane.pending.size > 0) return;
    lane.dropped = true;
    lane.call.cancel();
  };

  const retire = (lane: Lane): void => {
    if (lane.retired) return;
    lane.retired = true;
    const slots = lane.backend.slots;
    const i = slots.indexOf(lane);
    if (i >= 0) slots[i] = undefined;
    // Half-close: the kernel still answers what it accepted, then ends the stream.
    if (!lane.ended) lane.call.end();
    dropIfIdle(lane);
  };

  const unary = (b: Backend, method: PolicyMethod, req: PolicyCheckInit, deadlineMs: number): Promise<PolicyCheckResponse> =>
    method === PolicyMethod.CHECK
      ? b.client.check(req, { deadlineMs, waitForReady })
      : b.client.evaluate(req, { deadlineMs, waitForReady });

  const settle = (w: Waiter): void => {
    clearTimeout(w.timer);
    const lane = w.lane;
    if (!lane) return;
    lane.pending.delete(w.msg.id);
    dropIfIdle(lane);
  };

  const laneEnded = (lane: Lane, status: grpc.StatusObject): void => {
    if (lane.ended) return;
    lane.ended = true;
    lanes.delete(lane);
    retire(lane);
    const waiting = [...lane.pending.values()];
    lane.pending.clear();
    const b = lane.backend;
    if (status.code === grpc.status.UNIMPLEMENTED) unaryUntil = Date.now() + fallbackMs;
    else if (!closed && !lane.dropped && (status.code !== grpc.status.OK || waiting.length > 0)) markSuspect(b); // failed, or draining
    for (const w of waiting) {
      w.lane = undefined;
      if (closed) {
        clearTimeout(w.timer);
        w.reject(statusError(grpc.status.CANCELLED, 'policy client closed'));
      } else if (status.code === grpc.status.UNIMPLEMENTED) {
        // Never evaluated: the kernel does not know Decide. Same call, unary, in the time left.
        clearTimeout(w.timer);
        const left = Math.max(1, w.deadlineAt - Date.now());
        const req = w.msg.request ?? create(PolicyCheckRequestSchema);
        unary(b, w.msg.method, req, left).then(w.resolve, (err: unknown) => w.reject(err as PolicyCallError));
      } else if (status.code === grpc.status.OK && !w.resent) {
        // Ended cleanly without an answer: the kernel never accepted it (see the rules above).
        w.resent = true;
        send(w, pickBackend(b));
      } else if (status.code !== grpc.status.OK && !w.resent && backends.length > 1) {
        // The kernel failed under it (killed, connection lost): another kernel answers instead.
        // Safe to repeat: Evaluate records nothing and Check records velocity once per job (D20).
        w.resent = true;
        send(w, pickBackend(b));
      } else {
        clearTimeout(w.timer);
        w.reject(
          status.code === grpc.status.OK
            ? statusError(grpc.status.UNAVAILABLE, 'policy stream ended before the answer')
            : statusError(status.code, status.details),
        );
      }
    }
  };

  const openLane = (b: Backend): Lane => {
    const call = b.client.decide({ waitForReady });
    const lane: Lane = { backend: b, call, pending: new Map(), bornAt: Date.now(), retired: false, ended: false, dropped: false };
    lanes.add(lane);
    call.on('data', (res: PolicyStreamResponse) => {
      const w = lane.pending.get(res.id);
      if (!w) return; // its deadline passed
      if (res.code === grpc.status.UNAVAILABLE && res.message.startsWith(KERNEL_NOT_READY) && !w.resent && backends.length > 1) {
        // Refused before evaluating (P48): another kernel answers in the time left; this one
        // takes no new request until its health probe answers SERVING.
        lane.pending.delete(res.id);
        markSuspect(lane.backend);
        w.resent = true;
        send(w, pickBackend(lane.backend));
        return;
      }
      settle(w);
      if (res.code === 0 && res.response) w.resolve(res.response);
      else w.reject(statusError(res.code === 0 ? grpc.status.INTERNAL : (res.code as grpc.status), res.message || 'no response'));
    });
    // The error is also delivered as 'status'; this listener only keeps it from being thrown.
    call.on('error', () => undefined);
    // 'status' can come before the last 'data' events are emitted: let them drain first.
    call.on('status', (status: grpc.StatusObject) => setImmediate(() => laneEnded(lane, status)));
    return lane;
  };

  const pickLane = (b: Backend): Lane => {
    const i = b.nextSlot;
    b.nextSlot = (b.nextSlot + 1) % b.slots.length;
    let lane = b.slots[i];
    if (lane && Date.now() - lane.bornAt > maxAgeMs) {
      retire(lane);
      lane = undefined;
    }
    if (!lane) {
      lane = openLane(b);
      b.slots[i] = lane;
    }
    return lane;
  };

  function send(w: Waiter, b: Backend): void {
    const lane = pickLane(b);
    w.lane = lane;
    lane.pending.set(w.msg.id, w);
    lane.call.write(w.msg);
  }

  const expire = (w: Waiter): void => {
    const lane = w.lane;
    settle(w);
    w.reject(statusError(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'));
    // A kernel that is slow or stopped for one request is likely to be for the next: move on.
    if (lane) {
      retire(lane);
      markSuspect(lane.backend);
    }
  };

  const call = (method: PolicyMethod, req: PolicyCheckInit, deadlineMs: number): Promise<PolicyCheckResponse> => {
    if (closed) return Promise.reject(statusError(grpc.status.CANCELLED, 'policy client closed'));
    if (unaryUntil > Date.now()) return unary(pickBackend(), method, req, deadlineMs);
    nextId = (nextId + 1) >>> 0;
    const msg = create(PolicyStreamRequestSchema, { id: nextId, method, request: req });
    return new Promise<PolicyCheckResponse>((resolve, reject) => {
      const w: Waiter = { msg, resolve, reject, deadlineAt: Date.now() + deadlineMs, resent: false, timer: setTimeout(() => expire(w), deadlineMs) };
      send(w, pickBackend());
    });
  };

  return {
    check: (req, deadlineMs) => call(PolicyMethod.CHECK, req, deadlineMs),
    evaluate: (req, deadlineMs) => call(PolicyMethod.EVALUATE, req, deadlineMs),
    get transport() {
      return unaryUntil > Date.now() ? 'unary' : 'stream';
    },
    get suspects() {
      return backends.filter((b) => b.suspect).map((b) => b.target);
    },
    close() {
      if (closed) return;
      closed = true;
      for (const lane of lanes) {
        for (const w of lane.pending.values()) {
          clearTimeout(w.timer);
          w.reject(statusError(grpc.status.CANCELLED, 'policy client closed'));
        }
        lane.pending.clear();
        lane.call.cancel();
      }
      lanes.clear();
      for (const b of backends) {
        if (b.probe) clearTimeout(b.probe);
        b.client.close();
        b.health?.close();
      }
    },
  };
}

/** What a kernel answers on Decide: the same functions as its unary Check and Evaluate. */
export interface PolicyStreamImpl {
  check(req: PolicyCheckRequest): Promise<PolicyAnswer> | PolicyAnswer;
  evaluate(req: PolicyCheckRequest): Promise<PolicyAnswer> | PolicyAnswer;
}

export interface DecideHandler {
  (call: grpc.ServerDuplexStream<PolicyStreamRequest, PolicyStreamResponse>): void;
  /**
   * Graceful shutdown: every open stream takes no new request and ends once the ones it
   * accepted are answered (clients send the others again elsewhere); streams opened later
   * end at once. Without it, `tryShutdown` would wait for clients to close their streams.
   */
  drain(): void;
  /** Open Decide streams (metrics, tests). */
  readonly open: number;
}

export interface DecideHandlerOptions {
  /**
   * An answer that could not be encoded (a value its proto field cannot hold, such as a
   * constraint past int32): that request alone was answered INTERNAL. For the kernel's log.
   */
  onUnencodable?: (err: unknown, req: PolicyCheckRequest | undefined, answer: PolicyAnswer) => void;
}

export function decideHandler(impl: PolicyStreamImpl, opts: DecideHandlerOptions = {}): DecideHandler {
  const ends = new Set<() => void>();
  let draining = false;

  const handler = (call: grpc.ServerDuplexStream<PolicyStreamRequest, PolicyStreamResponse>): void => {
    let inFlight = 0;
    let clientEnded = false;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      ends.delete(tryEnd);
      call.end();
    };
    const tryEnd = (): void => {
      if ((clientEnded || draining) && inFlight === 0) finish();
    };
    const gone = (): void => {
      done = true;
      ends.delete(tryEnd);
    };
    const fail = (id: number, err: unknown): void => {
      const e = toServiceError(err);
      call.write(create(PolicyStreamResponseSchema, { id, code: e.code ?? grpc.status.INTERNAL, message: e.details ?? '' }));
    };
    ends.add(tryEnd);
    call.on('cancelled', gone);
    call.on('error', gone);
    call.on('end', () => {
      clientEnded = true;
      tryEnd();
    });
    call.on('data', (msg: PolicyStreamRequest) => {
      if (done || draining) return; // never accepted: the client sends it again elsewhere
      inFlight++;
      const { id } = msg;
      const fn =
        msg.method === PolicyMethod.CHECK ? impl.check : msg.method === PolicyMethod.EVALUATE ? impl.evaluate : undefined;
      Promise.resolve()
        .then(() => {
          if (!fn) throw Object.assign(new Error(`unknown policy method ${msg.method}`), { code: grpc.status.INVALID_ARGUMENT });
          return fn(msg.request ?? create(PolicyCheckRequestSchema));
        })
        .then(
          (response) => {
            if (done) return;
            // grpc-js encodes inside write(), and a message it cannot encode ends the whole
            // stream INTERNAL ("Error serializing response"), failing every request on it (and
            // those were other jobs). Encoded here first, such an answer fails its own request
            // only. The cost is a second encode of a small message (about 1 µs with the slab encoder).
            let reply: PolicyStreamResponse;
            try {
              reply = create(PolicyStreamResponseSchema, { id, response });
              encodeMessage(PolicyStreamResponseSchema, reply);
            } catch (err) {
              fail(id, grpcError(grpc.status.INTERNAL, `policy answer could not be encoded: ${err instanceof Error ? err.message : String(err)}`));
              try {
                opts.onUnencodable?.(err, msg.request, response);
              } catch {
                // a log hook never breaks the stream
              }
              return;
            }
            call.write(reply);
          },
          (err: unknown) => (done ? undefined : fail(id, err)),
        )
        .finally(() => {
          inFlight--;
          tryEnd();
        });
    });
    if (draining) tryEnd();
  };

  const drain = (): void => {
    draining = true;
    for (const end of [...ends]) end();
  };
  return Object.defineProperties(handler, {
    drain: { value: drain },
    open: { get: () => ends.size },
  }) as DecideHandler;
}
