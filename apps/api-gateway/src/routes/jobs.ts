// POST /api/v1/jobs and GET /api/v1/jobs/:id (CONTRACT §2).
import express, { type NextFunction, type Request, type Response } from 'express';
import { jobToApi, type JobStore } from '@cordum/job-store';
// Job ids are UUIDs here, but workflow/DLQ-created ids may differ: any safe token (P302: the bus's rule too); anything else is 404.
import { JOB_ID_RE } from '@cordum/protocol';
import { ApiError, retryAfter, type ErrorExtra } from '../http/errors';
import { actingTenant, caller } from '../auth/middleware';
import { chargedActingTenant } from '../ratelimit/middleware';
import { IDEMPOTENCY_KEY_RE, parseLabelledBody, submitBodySchema } from '../submit/schema';
import { SubmitError } from '../submit/errors';
import type { SubmitOutcome, SubmitService } from '../submit/service';
import type { Mount } from '../http/app';
import { withTimeout } from '../util/timeout';
import { clientJsonProblem } from '../http/json-depth';
import { declaredOver } from '../http/client-errors';

export const MAX_BODY_BYTES = 2 * 1024 * 1024;

/** P237: how long an oversized body is read and dropped before its 413 and the close. */
const OVERSIZE_LINGER_MS = 2_000;

/** 413 `payload_too_large` once the request's body has ended, the client went away, or OVERSIZE_LINGER_MS passed. */
function refuseAfterLinger(req: Request, next: NextFunction): void {
  let done = false;
  const refuse = (): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    next(new ApiError('payload_too_large'));
  };
  const timer = setTimeout(refuse, OVERSIZE_LINGER_MS);
  req.once('end', refuse);
  req.once('close', refuse);
  req.resume();
  if (req.complete) refuse();
}

/**
 * A declared non-JSON Content-Type is 415; a missing one is parsed as JSON
 * (curl-friendly). Bodies over 2 MiB are 413, bad JSON 400 invalid_json, JSON
 * nested deeper than MAX_JSON_DEPTH 400 validation_failed (http/json-depth.ts).
 */
export function jsonBody() {
  const parse = express.json({ limit: MAX_BODY_BYTES, strict: true, type: () => true });
  return (req: Request, res: Response, next: NextFunction) => {
    const ct = req.get('content-type');
    if (ct !== undefined && !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(ct)) throw new ApiError('unsupported_media_type');
    // P214: body-parser answers a declared body over the limit only once all of it has arrived
    // (it reads and drops it, to keep the connection usable), so a client that declared 3 MiB and
    // sent less waited for the request timeout. Refused now, and the connection closed after the
    // answer. P237: what has been sent is read and dropped first, until the body ends or
    // OVERSIZE_LINGER_MS passed: closing with unread data in the socket made the kernel reset the
    // connection, so a client still uploading got EPIPE instead of its 413.
    if (declaredOver(req, MAX_BODY_BYTES)) {
      res.setHeader('Connection', 'close');
      refuseAfterLinger(req, next);
      return;
    }
    parse(req, res, (err?: unknown) => {
      if (err !== undefined) next(err);
      else {
        const problem = clientJsonProblem(req.body, '(body)');
        next(problem === null ? undefined : new ApiError('validation_failed', { details: [problem] }));
      }
    });
  };
}

export function submitErrorToApi(err: SubmitError): ApiError {
  const extra: ErrorExtra = err.jobId !== undefined ? { job_id: err.jobId } : {};
  switch (err.code) {
    case 'policy_throttled':
      return new ApiError('policy_throttled', { message: err.message, ...retryAfter(err.retryAfterMs ?? 1000) });
    case 'idempotency_in_progress':
    case 'redis_unavailable':
    case 'bus_unavailable':
    case 'submit_state_unknown':
      return new ApiError(err.code, { extra, cause: err });
    case 'claim_lost':
      // Only a submit with an outside claim sees it (DLQ retry, which answers it itself); if one
      // ever got here, its claim is being used by another request: the same answer as a key's.
      return new ApiError('idempotency_in_progress', { extra, cause: err });
  }
}

function sendOutcome(res: Response, out: SubmitOutcome): void {
  switch (out.kind) {
    case 'accepted':
      res.status(200).json({ job_id: out.jobId, trace_id: out.traceId });
      return;
    case 'approval_required':
      res.status(200).json({ job_id: out.jobId, trace_id: out.traceId, status: 'approval_required', reason: out.reason });
      return;
    case 'denied':
      throw new ApiError('policy_denied', { message: out.reason || 'denied by policy', extra: { job_id: out.jobId, trace_id: out.traceId } });
  }
}

export interface JobRouteDeps {
  submit: SubmitService;
  store: JobStore;
  /** False while Redis is not connected: reads answer 503 at once instead of queueing. */
  redisReady(): boolean;
}

const READ_TIMEOUT_MS = 3_000;

export function mountJobRoutes(mount: Mount, deps: JobRouteDeps): void {
  mount('POST /api/v1/jobs', jsonBody(), async (req, res) => {
    const body = parseLabelledBody(submitBodySchema, req.body);
    const { caller: c, tenant } = await chargedActingTenant(res, body.tenant_id);

    const headerKey = req.get('idempotency-key');
    if (headerKey !== undefined && !IDEMPOTENCY_KEY_RE.test(headerKey)) {
      throw new ApiError('validation_failed', { details: [{ path: 'Idempotency-Key', message: 'must be 1-256 printable ASCII characters without spaces' }] });
    }
    if (headerKey !== undefined && body.idempotency_key !== undefined && headerKey !== body.idempotency_key) throw new ApiError('idempotency_key_mismatch');

    let out: SubmitOutcome;
    try {
      out = await deps.submit.submit({
        receivedAt: res.locals['receivedAt'] as number | undefined,
        tenant,
        principalId: c.principalId,
        prompt: body.prompt,
        topic: body.topic,
        context: body.context,
        priority: body.priority,
        labels: body.labels,
        idempotencyKey: headerKey ?? body.idempotency_key,
        memoryId: body.memory_id,
        contextMode: body.context_mode,
        capability: body.capability,
        riskTags: body.risk_tags,
        requires: body.requires,
        actorId: body.actor_id,
        actorType: body.actor_type,
        deadlineMs: body.deadline_ms,
      });
    } catch (err) {
      if (err instanceof SubmitError) throw submitErrorToApi(err);
      throw err;
    }
    sendOutcome(res, out);
  });

  mount('GET /api/v1/jobs/:id', async (req, res) => {
    const tenant = actingTenant(caller(res), undefined);
    const id = String(req.params['id'] ?? '');
    if (!JOB_ID_RE.test(id)) throw new ApiError('job_not_found');
    if (!deps.redisReady()) throw new ApiError('redis_unavailable');
    let view: object;
    try {
      const job = await withTimeout(deps.store.getJob(id), READ_TIMEOUT_MS, 'read job');
      // Another tenant's job is indistinguishable from a missing one (CONTRACT §2).
      if (!job || job.tenant !== tenant) throw new ApiError('job_not_found');
      view = jobToApi(job, await withTimeout(deps.store.readResult(job), READ_TIMEOUT_MS, 'read result'));
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError('redis_unavailable', { cause: err });
    }
    res.status(200).json(view);
  });
}
