// THE list of HTTP error codes (D28). Every error body is
// `{error, code, status, details?: [{path, message}]}`, plus the extras some
// codes add (ErrorExtra, each documented in api-schemas.ts). README.md
// mirrors this table; add a code here before using it anywhere.
import type { z } from 'zod';
import type { errorExtraSchema } from './api-schemas';

export const ERROR_CODES = {
  // 400
  invalid_json: { status: 400, message: 'request body is not valid JSON' },
  validation_failed: { status: 400, message: 'request validation failed' },
  invalid_tenant: { status: 400, message: 'X-Tenant-ID does not match ^[a-z0-9][a-z0-9_-]{0,62}$' },
  tenant_required: { status: 400, message: 'a key valid for any tenant needs X-Tenant-ID or tenant_id' },
  idempotency_key_mismatch: { status: 400, message: 'Idempotency-Key header and idempotency_key differ' },
  bad_request: { status: 400, message: 'bad request' },
  invalid_policy: { status: 400, message: 'the candidate policy is invalid' },
  // 401 / 403
  unauthenticated: { status: 401, message: 'missing or invalid API key' },
  forbidden: { status: 403, message: 'the key\'s role does not allow this route' },
  tenant_mismatch: { status: 403, message: 'the key is not valid for this tenant' },
  policy_denied: { status: 403, message: 'denied by policy' },
  self_approval_denied: { status: 403, message: 'the submitter cannot approve their own job' },
  // 404 / 405 / 409 / 413 / 415 / 429
  not_found: { status: 404, message: 'no such route' },
  method_not_allowed: { status: 405, message: 'the route does not take this method; the Allow header lists the ones it does' },
  job_not_found: { status: 404, message: 'job not found' },
  dlq_not_found: { status: 404, message: 'dead letter not found' },
  worker_not_found: { status: 404, message: 'worker not found' },
  job_busy: { status: 409, message: 'the job is locked by another operation; retry' },
  job_terminal: { status: 409, message: 'the job is already in a terminal state' },
  revision_conflict: { status: 409, message: 'config revision does not match; re-read and retry' },
  dlq_retry_in_progress: { status: 409, message: 'another retry of this dead letter is still creating its job' },
  dlq_source_expired: { status: 409, message: 'the dead job\'s input has expired; it cannot be retried' },
  dlq_not_retryable: { status: 409, message: 'the job failed at submit (bus_unavailable) and was never accepted; its client retries the request itself, so it cannot be retried from the DLQ (delete the entry)' },
  idempotency_in_progress: { status: 409, message: 'a request with this idempotency key is still in progress' },
  stale_request: { status: 409, message: 'the job request changed since it was held; review it again' },
  stale_snapshot: { status: 409, message: 'the current policy no longer requires approval from the rule that held the job' },
  approval_reheld: { status: 409, message: 'the job was held again after an earlier approval; approve again naming this hold\'s job_hash and rule_id (GET /api/v1/approvals)' },
  approval_not_pending: { status: 409, message: 'the job is not waiting for approval' },
  payload_too_large: { status: 413, message: 'request body exceeds 2 MiB' },
  unsupported_media_type: { status: 415, message: 'request body must be application/json' },
  policy_throttled: { status: 429, message: 'throttled by policy' },
  rate_limited: { status: 429, message: 'rate limit exceeded' },
  simulation_busy: { status: 429, message: 'the safety kernel is running other policy simulations; retry shortly' },
  key_not_found: { status: 404, message: 'API key not found' },
  upgrade_required: { status: 426, message: 'this route is a WebSocket; send Upgrade: websocket' },
  // Answered by the HTTP server before express sees the request (http/client-errors.ts)
  request_timeout: { status: 408, message: 'the request was not received in time' },
  headers_too_large: { status: 431, message: 'request headers exceed 16 KiB' },
  expectation_failed: { status: 417, message: 'the only Expect the gateway meets is 100-continue' },
  // 5xx: dependency faults and real server faults only, never bad input
  internal: { status: 500, message: 'internal error' },
  too_many_streams: { status: 429, message: 'too many streams open for this tenant on this gateway' },
  stream_capacity: { status: 503, message: 'this gateway has no room for another stream; retry (another replica may have room)' },
  redis_unavailable: { status: 503, message: 'job store unavailable' },
  safety_unavailable: { status: 503, message: 'safety kernel unavailable' },
  bus_unavailable: { status: 503, message: 'message bus unavailable; the job was not accepted' },
  submit_state_unknown: { status: 503, message: 'the job may or may not have been accepted; query it by job_id' },
  state_unknown: { status: 503, message: 'the change was sent but its answer did not come: it may or may not have been applied; repeat the call (it answers already_approved, already_rejected or job_terminal if it was) or read the job' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorDetail {
  path: string;
  message: string;
}

/** The fields some codes add to the envelope, each documented in api-schemas.ts (errorExtraSchema). */
export type ErrorExtra = z.infer<typeof errorExtraSchema>;

export interface ErrorBody extends ErrorExtra {
  error: string;
  code: ErrorCode;
  status: number;
  details?: ErrorDetail[];
}

/**
 * What every 429 carries (CONTRACT §2): `Retry-After` in whole seconds (≥ 1) and `retry_after_ms`
 * in the body. Spread into an ApiError's options.
 */
export function retryAfter(ms: number): { headers: Record<string, string>; extra: { retry_after_ms: number } } {
  return { headers: { 'Retry-After': String(Math.max(1, Math.ceil(ms / 1000))) }, extra: { retry_after_ms: ms } };
}

/** A typed API error: handlers throw it, the error handler renders it. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetail[] | undefined;
  readonly extra: ErrorExtra;
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCode,
    opts: { message?: string; details?: ErrorDetail[]; extra?: ErrorExtra; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(opts.message ?? ERROR_CODES[code].message, { cause: opts.cause });
    this.name = 'ApiError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = opts.details;
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { error: this.message, code: this.code, status: this.status, ...this.extra };
    if (this.details && this.details.length > 0) body.details = this.details;
    return body;
  }
}

/**
 * express.json's strict mode refuses a body that is valid JSON but not an object or
 * array (`null`, `"text"`, `42`) as a parse failure. Say what it is instead, as the
 * schemas do for an array: 400 validation_failed on `(body)`.
 */
function notAnObject(raw: unknown): ApiError | null {
  if (typeof raw !== 'string') return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  const kind = value === null ? 'null' : typeof value;
  return new ApiError('validation_failed', { details: [{ path: '(body)', message: `Invalid input: expected object, received ${kind}` }] });
}

/** Errors thrown by body-parser (express.json) carry `type`; map them to our codes. */
export function fromBodyParserError(err: unknown): ApiError | null {
  if (typeof err !== 'object' || err === null) return null;
  const e = err as { type?: unknown; status?: unknown; statusCode?: unknown };
  switch (e.type) {
    case 'entity.too.large':
      return new ApiError('payload_too_large');
    case 'entity.parse.failed':
      return notAnObject((err as { body?: unknown }).body) ?? new ApiError('invalid_json');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new ApiError('unsupported_media_type');
    case 'request.aborted':
    case 'request.size.invalid':
    case 'stream.encoding.set':
    case 'stream.not.readable':
      return new ApiError('bad_request');
    default:
      break;
  }
  // Any other client-side (4xx) error from the framework stays a 4xx.
  const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : 0;
  if (status >= 400 && status < 500) return new ApiError('bad_request');
  return null;
}
