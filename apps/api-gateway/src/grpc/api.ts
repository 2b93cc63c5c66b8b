// gRPC edge: cordum.v1.CordumApi/SubmitJob and GetJobStatus (CONTRACT §2/§4)
// plus grpc.health.v1. Same auth (metadata x-api-key / x-tenant-id), tenancy,
// rate limit and validation as HTTP: the request is mapped onto the POST
// /api/v1/jobs body and parsed by the same schema, then the same submit service runs.
import * as grpc from '@grpc/grpc-js';
import {
  CordumApi,
  GetJobStatusResponseSchema,
  GrpcStatus,
  ServingStatus,
  SubmitJobResponseSchema,
  addHealthService,
  create,
  grpcServerOptions,
  grpcServiceDefinition,
  type GetJobStatusRequest,
  type MessageInitShape,
  type SubmitJobRequest,
} from '@cordum/protocol';
import type { JobStore } from '@cordum/job-store';
import type { Logger } from '@cordum/service-kit';
import { actingTenant, authenticate, type Caller } from '../auth/middleware';
import type { KeyStore } from '../auth/keys';
import { ApiError, type ErrorCode } from '../http/errors';
import { jsonTooDeep, tooDeepMessage } from '../http/json-depth';
import type { RateLimiter } from '../ratelimit/limiter';
import { limitKey, peerAddress, rateLimitError } from '../ratelimit/middleware';
import { submitErrorToApi } from '../routes/jobs';
import { IDEMPOTENCY_KEY_RE, submitBodySchema, zodDetails } from '../submit/schema';
import { SubmitError } from '../submit/errors';
import type { SubmitService } from '../submit/service';
import { withTimeout } from '../util/timeout';

const READ_TIMEOUT_MS = 3_000;
const JOB_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

const GRPC_CODE: Partial<Record<ErrorCode, grpc.status>> = {
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  forbidden: GrpcStatus.PERMISSION_DENIED,
  tenant_mismatch: GrpcStatus.PERMISSION_DENIED,
  policy_denied: GrpcStatus.PERMISSION_DENIED,
  job_not_found: GrpcStatus.NOT_FOUND,
  not_found: GrpcStatus.NOT_FOUND,
  idempotency_in_progress: GrpcStatus.ABORTED,
  policy_throttled: GrpcStatus.RESOURCE_EXHAUSTED,
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  redis_unavailable: GrpcStatus.UNAVAILABLE,
  bus_unavailable: GrpcStatus.UNAVAILABLE,
  submit_state_unknown: GrpcStatus.UNAVAILABLE,
  internal: GrpcStatus.INTERNAL,
};

/** ApiError → gRPC status; the stable code, details and extras travel in trailing metadata. */
export function toGrpcError(err: unknown, log: Logger): Partial<grpc.StatusObject> {
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
  for (const [k, v] of Object.entries(api.extra)) md.set(`cordum-${k.replace(/_/g, '-')}`, String(v));
  const detail = api.details?.map((d) => `${d.path}: ${d.message}`).join('; ');
  const message = detail ? `${api.message} (${detail})` : api.message;
  return { code, details: message, metadata: md };
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
    if (jsonTooDeep(context)) throw new ApiError('validation_failed', { details: [{ path: 'context_json', message: tooDeepMessage() }] });
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
  redisReady(): boolean;
  ready(): boolean;
}

export interface GrpcApi {
  readonly port: number;
  close(): Promise<void>;
}

export async function startGrpcApi(d: GrpcApiDeps): Promise<GrpcApi> {
  const log = d.logger.child({ component: 'grpc' });
  const server = new grpc.Server(grpcServerOptions({ 'grpc.max_receive_message_length': 2 * 1024 * 1024 }));

  const auth = async (md: grpc.Metadata, route: 'POST /api/v1/jobs' | 'GET /api/v1/jobs/:id', peer: string): Promise<Caller> => {
    const c = await authenticate(d.keys, route, { key: mdValue(md, 'x-api-key'), tenantHeader: mdValue(md, 'x-tenant-id'), client: peerAddress(peer) });
    if (d.limiter) {
      const r = await d.limiter.check(limitKey(c.tenant, peerAddress(peer)));
      if (!r.allowed) throw rateLimitError(r.retryAfterMs);
    }
    return c;
  };

  const impl = {
    async submitJob(req: SubmitJobRequest, call: grpc.ServerUnaryCall<SubmitJobRequest, unknown>): Promise<MessageInitShape<typeof SubmitJobResponseSchema>> {
      try {
        const c = await auth(call.metadata, 'POST /api/v1/jobs', call.getPeer());
        const parsed = submitBodySchema.safeParse(requestToBody(req));
        if (!parsed.success) throw new ApiError('validation_failed', { details: zodDetails(parsed.error) });
        const b = parsed.data;
        const tenant = actingTenant(c, b.tenant_id);
        if (b.idempotency_key !== undefined && !IDEMPOTENCY_KEY_RE.test(b.idempotency_key)) {
          throw new ApiError('validation_failed', { details: [{ path: 'idempotency_key', message: 'must be 1-256 printable ASCII characters without spaces' }] });
        }
        const out = await d.submit.submit({
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
        throw new GrpcFailure(toGrpcError(err, log));
      }
    },

    async getJobStatus(req: GetJobStatusRequest, call: grpc.ServerUnaryCall<GetJobStatusRequest, unknown>): Promise<MessageInitShape<typeof GetJobStatusResponseSchema>> {
      try {
        const c = await auth(call.metadata, 'GET /api/v1/jobs/:id', call.getPeer());
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
        return {
          jobId: job.id,
          state: job.state,
          topic: job.topic,
          resultPtr: job.resultPtr ?? '',
          resultJson: result === null || result === undefined ? '' : JSON.stringify(result),
          errorCode: job.error?.code ?? '',
          errorMessage: job.error?.message ?? '',
          attempts: BigInt(job.attempts),
          updatedAt: new Date(job.updatedAt).toISOString(),
        };
      } catch (err) {
        throw new GrpcFailure(toGrpcError(err, log));
      }
    },
  };
  // Registered here rather than with addGrpcService so an error keeps its trailing metadata (cordum-error-code, cordum-job-id).
  const unary =
    <Req, Res>(fn: (req: Req, call: grpc.ServerUnaryCall<Req, unknown>) => Promise<Res>, toMsg: (r: Res) => unknown) =>
    (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>): void => {
      fn(call.request, call).then(
        (res) => cb(null, toMsg(res)),
        (err: unknown) => cb(err instanceof GrpcFailure ? err.status : toGrpcError(err, log)),
      );
    };
  server.addService(grpcServiceDefinition(CordumApi), {
    submitJob: unary(impl.submitJob, (r) => create(SubmitJobResponseSchema, r)),
    getJobStatus: unary(impl.getJobStatus, (r) => create(GetJobStatusResponseSchema, r)),
  });
  addHealthService(server, (service) => {
    if (service !== '' && service !== 'cordum.v1.CordumApi') return undefined;
    return d.ready() ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  });

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${d.addr.host}:${d.addr.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  let closing: Promise<void> | undefined;
  return {
    port,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 5_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      })),
  };
}
