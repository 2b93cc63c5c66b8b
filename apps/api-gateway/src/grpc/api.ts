// gRPC edge: cordum.v1.CordumApi/SubmitJob and GetJobStatus (CONTRACT §2/§4)
// plus grpc.health.v1. Same auth (metadata x-api-key or authorization: Bearer, and x-tenant-id), tenancy,
// rate limit and validation as HTTP: the request is mapped onto the POST
// /api/v1/jobs body and parsed by the same schema, then the same submit service runs.
// As on HTTP, the key and the rate limit are checked before the request message is
// read (a server interceptor), a request must arrive within 30 s, and every call is
// logged and counted with a request id.
import * as grpc from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';
import { clusterNow } from '@cordum/redis';
import {
  CordumApi,
  GetJobStatusResponseSchema,
  GrpcStatus,
  ServingStatus,
  SubmitJobResponseSchema,
  addHealthService,
  boundedStatusMessage,
  create,
  bindGrpcServer,
  grpcServerOptions,
  grpcServiceDefinition,
  shutdownGrpcServer,
  JOB_ID_RE,
  type GetJobStatusRequest,
  type MessageInitShape,
  type SubmitJobRequest,
} from '@cordum/protocol';
import { jobToApi, type JobStore } from '@cordum/job-store';
import { errorText, type Logger } from '@cordum/service-kit';
import { actingTenant, authenticateCharged, type Caller } from '../auth/middleware';
import type { KeyStore } from '../auth/keys';
import { requestIdOf } from '../http/request-id';
import { ApiError, type ErrorCode } from '../http/errors';
import { clientJsonProblem } from '../http/json-depth';
import type { RateLimiter } from '../ratelimit/limiter';
import { chargeRequest, chargeTenantNamedInBody, peerAddress } from '../ratelimit/middleware';
import { submitErrorToApi } from '../routes/jobs';
import { IDEMPOTENCY_KEY_RE, parseLabelledBody, submitBodySchema } from '../submit/schema';
import { SubmitError } from '../submit/errors';
import type { SubmitService } from '../submit/service';
import { withTimeout } from '../util/timeout';
import { statusMessage, trailerValue } from './status';

const READ_TIMEOUT_MS = 3_000;
/** A call's request (message and half-close) must have arrived this long after the call began (HTTP's requestTimeout). */
export const RECEIVE_TIMEOUT_MS = 30_000;
/** Calls open at once on one client connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
export const MAX_CONCURRENT_STREAMS = 100;

type AuthRoute = 'POST /api/v1/jobs' | 'GET /api/v1/jobs/:id';
/** The CordumApi methods by path: the name in logs and metrics and the route of the role table. */
const METHODS: Record<string, { name: string; route: AuthRoute }> = {
  '/cordum.v1.CordumApi/SubmitJob': { name: 'SubmitJob', route: 'POST /api/v1/jobs' },
  '/cordum.v1.CordumApi/GetJobStatus': { name: 'GetJobStatus', route: 'GET /api/v1/jobs/:id' },
};

/** A request message that did not decode: answered INVALID_ARGUMENT, not grpc-js's INTERNAL. */
class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/** What the interceptor learned before the handler runs, keyed by the call's metadata object. */
interface CallContext {
  caller: Caller;
  log: Logger;
}

const GRPC_CODE: Partial<Record<ErrorCode, grpc.status>> = {
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  forbidden: GrpcStatus.PERMISSION_DENIED,
  tenant_mismatch: GrpcStatus.PERMISSION_DENIED,
  policy_denied: GrpcStatus.PERMISSION_DENIED,
  job_not_found: GrpcStatus.NOT_FOUND,
  not_found: GrpcStatus.NOT_FOUND,
  idempotency_in_progress: GrpcStatus.ABORTED,
  request_timeout: GrpcStatus.DEADLINE_EXCEEDED,
  policy_throttled: GrpcStatus.RESOURCE_EXHAUSTED,
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  redis_unavailable: GrpcStatus.UNAVAILABLE,
  bus_unavailable: GrpcStatus.UNAVAILABLE,
  // P335: the job may have been accepted and will run if it was. UNAVAILABLE tells gRPC clients the
  // call was not applied, and their retry policies resend it (a keyless submit: a second job).
  submit_state_unknown: GrpcStatus.UNKNOWN,
  internal: GrpcStatus.INTERNAL,
};

/**
 * ApiError → gRPC status; the stable code and extras travel in trailing metadata, the details in
 * the message, bounded (status.ts): a status too large to send was never sent at all.
 */
export function toGrpcError(err: unknown, log: Logger): grpc.StatusObject {
  let api: ApiError;
  if (err instanceof ApiError) api = err;
  else if (err instanceof SubmitError) api = submitErrorToApi(err);
  else {
    log.error('grpc handler failed', { err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) });
    api = new ApiError('internal');
  }
  const code = GRPC_CODE[api.code] ?? (api.status >= 400 && api.status < 500 ? GrpcStatus.INVALID_ARGUMENT : GrpcStatus.INTERNAL);
  const md = new grpc.Metadata();
  md.set('cordum-error-code', api.code);
  for (const [k, v] of Object.entries(api.extra)) md.set(`cordum-${k.replace(/_/g, '-')}`, trailerValue(v));
  return { code, details: statusMessage(api.message, api.details), metadata: md };
}

class GrpcFailure extends Error {
  constructor(readonly status: Partial<grpc.StatusObject>) {
    super(status.details);
  }
}

function mdValue(md: grpc.Metadata, name: string): string | undefined {
  const v = md.get(name)[0];
  return typeof v === 'string' ? v : v instanceof Buffer ? v.toString('utf8') : undefined;
}

/** The key a call presents, read as HTTP reads it (presentedKey in auth/middleware.ts): a non-empty x-api-key, else `authorization: Bearer <key>`. */
function presentedKey(md: grpc.Metadata): string | undefined {
  const header = mdValue(md, 'x-api-key');
  if (header !== undefined && header.length > 0) return header;
  const auth = mdValue(md, 'authorization');
  if (auth !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  return undefined;
}

/** proto3 has no "absent": empty strings / 0 mean unset, and context arrives as JSON text. */
export function requestToBody(r: SubmitJobRequest): Record<string, unknown> {
  const s = (v: string): string | undefined => (v === '' ? undefined : v);
  let context: unknown;
  if (r.contextJson !== '') {
    try {
      context = JSON.parse(r.contextJson) as unknown;
    } catch {
      throw new ApiError('validation_failed', { details: [{ path: 'context_json', message: 'must be JSON text' }] });
    }
    const problem = clientJsonProblem(context, 'context_json', 'context_json');
    if (problem !== null) throw new ApiError('validation_failed', { details: [problem] });
  }
  return {
    prompt: r.prompt,
    topic: r.topic,
    context,
    priority: s(r.priority),
    labels: r.labels,
    idempotency_key: s(r.idempotencyKey),
    memory_id: s(r.memoryId),
    context_mode: s(r.contextMode),
    capability: s(r.capability),
    risk_tags: r.riskTags,
    requires: r.requires,
    actor_id: s(r.actorId),
    actor_type: s(r.actorType),
    deadline_ms: r.deadlineMs === 0n ? undefined : Number(r.deadlineMs),
    tenant_id: s(r.tenantId),
  };
}

export interface GrpcApiDeps {
  addr: { host: string; port: number };
  keys: KeyStore;
  limiter?: RateLimiter;
  submit: SubmitService;
  store: JobStore;
  logger: Logger;
  registry: Registry;
  /** Default RECEIVE_TIMEOUT_MS. */
  receiveTimeoutMs?: number | undefined;
  redisReady(): boolean;
  /** grpc.health.v1's answer: the checks of /readyz. */
  ready(): Promise<boolean>;
}

export interface GrpcApi {
  readonly port: number;
  close(): Promise<void>;
}

export async function startGrpcApi(d: GrpcApiDeps): Promise<GrpcApi> {
  const log = d.logger.child({ component: 'grpc' });
  const requests = new Counter({
    name: 'cordum_grpc_requests_total',
    help: 'gRPC CordumApi calls by method and status code (CANCELLED: the client went away first)',
    labelNames: ['method', 'code'],
    registers: [d.registry],
  });
  const duration = new Histogram({
    name: 'cordum_grpc_request_duration_seconds',
    help: 'gRPC CordumApi call duration, from the call to its status',
    labelNames: ['method'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [d.registry],
  });

  const auth = async (md: grpc.Metadata, route: AuthRoute, peer: string): Promise<Caller> => {
    // A call refused for its role or tenant is charged too (P172).
    return authenticateCharged(d.keys, route, { key: presentedKey(md), tenantHeader: mdValue(md, 'x-tenant-id'), client: peerAddress(peer) }, async (c) => {
      if (d.limiter) await chargeRequest(d.limiter, c.tenant, peerAddress(peer));
    });
  };

  const contexts = new WeakMap<grpc.Metadata, CallContext>();
  /**
   * Authenticates and rate-limits a CordumApi call from its metadata before grpc-js reads the
   * request message (the stream stays paused until the handler's listener starts a read), so a
   * caller without a valid key cannot make the server buffer messages; a request (message and
   * half-close) that has not arrived RECEIVE_TIMEOUT_MS after the call began ends it
   * DEADLINE_EXCEEDED. Statuses grpc-js sends itself (a message over 2 MiB, a client's own
   * deadline) bypass this responder and are counted CANCELLED, without a request id. Every call ends in
   * one log line, `cordum_grpc_requests_total` and a trailing `x-request-id` (the caller's, if
   * well formed, as on HTTP).
   */
  const interceptor: grpc.ServerInterceptor = (method, call) => {
    const m = METHODS[method.path];
    if (!m) return new grpc.ServerInterceptingCall(call);
    const started = performance.now();
    let requestId = requestIdOf(undefined);
    let callLog = log;
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const stopTimer = (): void => {
      clearTimeout(timer);
      timer = undefined;
    };
    const record = (code: grpc.status): void => {
      if (finished) return;
      finished = true;
      stopTimer();
      const ms = performance.now() - started;
      const name = GrpcStatus[code] ?? String(code);
      requests.inc({ method: m.name, code: name });
      duration.observe({ method: m.name }, ms / 1000);
      callLog.info('grpc request', { method: m.name, code: name, duration_ms: Math.round(ms) });
    };
    const intercepted: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(next) {
        timer = setTimeout(() => intercepted.sendStatus(toGrpcError(new ApiError('request_timeout'), callLog)), d.receiveTimeoutMs ?? RECEIVE_TIMEOUT_MS);
        next({
          onReceiveMetadata(md, mdNext) {
            requestId = requestIdOf(mdValue(md, 'x-request-id'));
            callLog = log.child({ request_id: requestId });
            auth(md, m.route, call.getPeer()).then(
              (caller) => {
                if (finished) return;
                contexts.set(md, { caller, log: callLog });
                mdNext(md);
              },
              (err: unknown) => intercepted.sendStatus(toGrpcError(err, callLog)),
            );
          },
          // The request is complete at the half-close (grpc-js runs a unary handler only then):
          // a client that sends its message but never ends its stream is cut by the timer too.
          onReceiveHalfClose(halfCloseNext) {
            stopTimer();
            halfCloseNext();
          },
          onCancel() {
            record(GrpcStatus.CANCELLED);
          },
        });
      },
      sendStatus(status, next) {
        record(status.code);
        const md = status.metadata ?? new grpc.Metadata();
        md.set('x-request-id', requestId);
        // toGrpcError bounds its messages; this holds for any other status of the call too.
        next({ ...status, details: boundedStatusMessage(status.details), metadata: md });
      },
    });
    return intercepted;
  };

  const server = new grpc.Server({
    ...grpcServerOptions({ 'grpc.max_receive_message_length': 2 * 1024 * 1024, 'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS }),
    interceptors: [interceptor],
  });

  const context = (call: grpc.ServerUnaryCall<unknown, unknown>): CallContext => {
    const c = contexts.get(call.metadata);
    if (!c) throw new Error('call reached its handler without the auth interceptor');
    return c;
  };
  const decoded = <T>(req: T | UndecodableRequest, type: string): T => {
    if (req instanceof UndecodableRequest) throw new ApiError('bad_request', { message: `request is not a valid ${type} message: ${req.reason}` });
    return req;
  };

  const impl = {
    async submitJob(raw: SubmitJobRequest | UndecodableRequest, call: grpc.ServerUnaryCall<SubmitJobRequest, unknown>): Promise<MessageInitShape<typeof SubmitJobResponseSchema>> {
      const receivedAt = clusterNow(); // P321: the job's createdAt
      const { caller: c, log: callLog } = context(call);
      try {
        const req = decoded(raw, 'cordum.v1.SubmitJobRequest');
        // As HTTP: an own `__proto__` label (protobuf-es keeps it as a map key) is refused by name, not dropped.
        const b = parseLabelledBody(submitBodySchema, requestToBody(req));
        const tenant = actingTenant(c, b.tenant_id);
        // P270: a `*` key without x-tenant-id was charged to its address; the tenant it names is charged too.
        await chargeTenantNamedInBody(d.limiter, c, tenant);
        if (b.idempotency_key !== undefined && !IDEMPOTENCY_KEY_RE.test(b.idempotency_key)) {
          throw new ApiError('validation_failed', { details: [{ path: 'idempotency_key', message: 'must be 1-256 printable ASCII characters without spaces' }] });
        }
        const out = await d.submit.submit({
          receivedAt,
          tenant,
          principalId: c.principalId,
          prompt: b.prompt,
          topic: b.topic,
          context: b.context,
          priority: b.priority,
          labels: b.labels,
          idempotencyKey: b.idempotency_key,
          memoryId: b.memory_id,
          contextMode: b.context_mode,
          capability: b.capability,
          riskTags: b.risk_tags,
          requires: b.requires,
          actorId: b.actor_id,
          actorType: b.actor_type,
          deadlineMs: b.deadline_ms,
        });
        if (out.kind === 'denied') throw new ApiError('policy_denied', { message: out.reason || 'denied by policy', extra: { job_id: out.jobId, trace_id: out.traceId } });
        return { jobId: out.jobId, traceId: out.traceId, status: out.kind === 'approval_required' ? 'approval_required' : 'accepted', reason: out.kind === 'approval_required' ? out.reason : '' };
      } catch (err) {
        throw new GrpcFailure(toGrpcError(err, callLog));
      }
    },

    async getJobStatus(raw: GetJobStatusRequest | UndecodableRequest, call: grpc.ServerUnaryCall<GetJobStatusRequest, unknown>): Promise<MessageInitShape<typeof GetJobStatusResponseSchema>> {
      const { caller: c, log: callLog } = context(call);
      try {
        const req = decoded(raw, 'cordum.v1.GetJobStatusRequest');
        const tenant = actingTenant(c, undefined);
        if (!JOB_ID_RE.test(req.jobId)) throw new ApiError('job_not_found');
        if (!d.redisReady()) throw new ApiError('redis_unavailable');
        let job;
        let result: unknown;
        try {
          job = await withTimeout(d.store.getJob(req.jobId), READ_TIMEOUT_MS, 'read job');
          if (job && job.tenant === tenant) result = await withTimeout(d.store.readResult(job), READ_TIMEOUT_MS, 'read result');
        } catch (err) {
          throw new ApiError('redis_unavailable', { cause: err });
        }
        if (!job || job.tenant !== tenant) throw new ApiError('job_not_found');
        // HTTP's view of the job, so both answer the same: no error on a SUCCEEDED job (an earlier attempt's stays on its record).
        const api = jobToApi(job, result);
        return {
          jobId: job.id,
          state: job.state,
          topic: job.topic,
          resultPtr: job.resultPtr ?? '',
          resultJson: result === null || result === undefined ? '' : JSON.stringify(result),
          errorCode: api.error?.code ?? '',
          errorMessage: api.error?.message ?? '',
          attempts: BigInt(job.attempts),
          updatedAt: new Date(job.updatedAt).toISOString(),
        };
      } catch (err) {
        throw new GrpcFailure(toGrpcError(err, callLog));
      }
    },
  };
  // Registered here rather than with addGrpcService so an error keeps its trailing metadata (cordum-error-code, cordum-job-id).
  const unary =
    <Req, Res>(fn: (req: Req | UndecodableRequest, call: grpc.ServerUnaryCall<Req, unknown>) => Promise<Res>, toMsg: (r: Res) => unknown) =>
    (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>): void => {
      Promise.resolve().then(() => fn(call.request, call)).then(
        (res) => cb(null, toMsg(res)),
        (err: unknown) => cb(err instanceof GrpcFailure ? err.status : toGrpcError(err, log)),
      );
    };
  server.addService(grpcServiceDefinition(CordumApi, { undecodable: (err) => new UndecodableRequest(errorText(err)) }), {
    submitJob: unary(impl.submitJob, (r) => create(SubmitJobResponseSchema, r)),
    getJobStatus: unary(impl.getJobStatus, (r) => create(GetJobStatusResponseSchema, r)),
  });
  const health = addHealthService(server, async (service) => {
    if (service !== '' && service !== 'cordum.v1.CordumApi') return undefined;
    return (await d.ready()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  });

  const port = await bindGrpcServer(server, d.addr);
  let closing: Promise<void> | undefined;
  return {
    port,
    close: () =>
      // P232: open health Watches end first (NOT_SERVING, then OK) instead of holding the drain.
      (closing ??= shutdownGrpcServer(server, { endStreams: () => health.endWatches() })),
  };
}
