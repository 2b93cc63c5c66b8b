// GET /api/v1/dlq, POST /api/v1/dlq/:job_id/retry, DELETE /api/v1/dlq/:job_id
// (CONTRACT §2, D14). Every route sees only the caller's tenant: another
// tenant's entry is 404 dlq_not_found, exactly like a missing one.
import { z } from 'zod';
import type { Request, Response } from 'express';
import { jobKeys, type DlqEntry, type JobStore } from '@cordum/job-store';
import type { RedisClient } from '@cordum/redis';
import { ApiError } from '../http/errors';
import type { Mount } from '../http/app';
import { actingTenant, caller } from '../auth/middleware';
import { chargedActingTenant } from '../ratelimit/middleware';
import { decodeCursor } from '../lists/cursor';
import { pageIndex } from '../lists/pager';
import { auditIfUnknown, type AuditSink } from '../audit/sink';
import type { DlqRetrier } from '../dlq/retry';
import { SubmitError } from '../submit/errors';
import { jsonBody, submitErrorToApi } from './jobs';
import { JOB_ID_RE } from '@cordum/protocol';
import { zodDetails } from '../submit/schema';
import { storeCall, storeWrite } from '../http/store-call';
import { DEFAULT_LIST_LIMIT, LIST_SCAN_BUDGET, parseQuery, topicPageQueryFields } from './job-actions';

/** Also the OpenAPI description's query parameters (P297). */
export const dlqQuerySchema = z.object({
  limit: topicPageQueryFields.limit,
  cursor: topicPageQueryFields.cursor,
});

/** Optional body; only `tenant_id` (D47: must be the acting tenant). */
/** Also the OpenAPI description's body (P170). */
export const retryBodySchema = z.object({ tenant_id: z.string().nullish().describe('must equal the acting tenant (D47)') }).optional();

export interface DlqRouteDeps {
  redis: RedisClient;
  store: JobStore;
  retrier: DlqRetrier;
  audit: AuditSink;
  redisReady(): boolean;
}

function dlqItem(e: DlqEntry) {
  return { job_id: e.job_id, topic: e.topic, reason: e.reason, reason_code: e.reason_code, last_state: e.last_state, attempts: e.attempts, created_at: e.created_at };
}

function entryId(req: Request): string {
  const id = String(req.params['job_id'] ?? '');
  if (!JOB_ID_RE.test(id)) throw new ApiError('dlq_not_found');
  return id;
}

export function mountDlqRoutes(mount: Mount, deps: DlqRouteDeps): void {
  mount('GET /api/v1/dlq', async (req: Request, res: Response) => {
    const tenant = actingTenant(caller(res), undefined);
    const q = parseQuery(dlqQuerySchema, req);
    const key = jobKeys.dlqIndexTenant(tenant);
    // P297: a bad cursor is 400 whether or not Redis answers (it was 503 while Redis was down).
    const after = decodeCursor(q.cursor);
    const page = await storeCall(deps, 'list dlq', () =>
      pageIndex(deps.redis, {
        key,
        after,
        limit: q.limit ?? DEFAULT_LIST_LIMIT,
        scanBudget: LIST_SCAN_BUDGET,
        load: async (ids) => {
          const raws = await Promise.all(ids.map((id) => deps.redis.get(jobKeys.dlqEntry(id))));
          const gone: string[] = [];
          const out = raws.map((raw, i) => {
            let e: DlqEntry | null = null;
            try {
              e = raw === null ? null : (JSON.parse(raw) as DlqEntry);
            } catch {
              e = null;
            }
            if (!e) gone.push(ids[i] as string);
            return e && e.tenant === tenant ? dlqItem(e) : null;
          });
          // Expired entries leave index members behind; drop them lazily (idempotent).
          if (gone.length > 0) await deps.redis.zrem(key, ...gone);
          return out;
        },
      }),
    );
    res.status(200).json(page);
  });

  mount('POST /api/v1/dlq/:job_id/retry', jsonBody(), async (req: Request, res: Response) => {
    const body = retryBodySchema.safeParse(req.body);
    if (!body.success) throw new ApiError('validation_failed', { details: zodDetails(body.error) });
    const { caller: c, tenant } = await chargedActingTenant(res, body.data?.tenant_id ?? undefined);
    const id = entryId(req);
    if (!deps.redisReady()) throw new ApiError('redis_unavailable');
    const r = await auditIfUnknown(deps.audit, { action: 'dlq.retry', tenant, principal_id: c.principalId, target: id }, async () => {
      try {
        return await deps.retrier.retry(tenant, id, c.principalId);
      } catch (err) {
        if (err instanceof SubmitError) throw submitErrorToApi(err);
        if (err instanceof ApiError) throw err;
        throw new ApiError('redis_unavailable', { cause: err });
      }
    });
    switch (r.kind) {
      case 'not_found':
        throw new ApiError('dlq_not_found');
      case 'source_expired':
        throw new ApiError('dlq_source_expired');
      case 'in_progress':
        throw new ApiError('dlq_retry_in_progress', { extra: { job_id: r.jobId, retried_from: id } });
      case 'already_retried':
        res.status(200).json({ job_id: r.job.id, retried_from: id, status: 'already_retried', state: r.job.state });
        return;
      case 'already_retried_expired':
        // No state: the job the entry was retried into has run its JOB_TTL and its record is gone (P138).
        res.status(200).json({ job_id: r.jobId, retried_from: id, status: 'already_retried' });
        return;
      case 'retried': {
        deps.audit.record({ action: 'dlq.retry', tenant, principal_id: c.principalId, target: id, details: { new_job_id: r.outcome.jobId } });
        const o = r.outcome;
        if (o.kind === 'denied') throw new ApiError('policy_denied', { message: o.reason || 'denied by policy', extra: { job_id: o.jobId, trace_id: o.traceId, retried_from: id } });
        if (o.kind === 'approval_required') {
          res.status(200).json({ job_id: o.jobId, retried_from: id, status: 'approval_required', reason: o.reason });
          return;
        }
        res.status(200).json({ job_id: o.jobId, retried_from: id });
        return;
      }
    }
  });

  mount('DELETE /api/v1/dlq/:job_id', async (req: Request, res: Response) => {
    const c = caller(res);
    const tenant = actingTenant(c, undefined);
    const id = entryId(req);
    const entry = await storeCall(deps, 'read dlq', () => deps.store.getDlq(id));
    if (!entry || entry.tenant !== tenant) throw new ApiError('dlq_not_found');
    await auditIfUnknown(deps.audit, { action: 'dlq.delete', tenant, principal_id: c.principalId, target: id }, () =>
      // P335: a delete whose answer did not come may have run; its repeat then answers 404.
      storeWrite(deps, 'delete dlq', () => deps.store.deleteDlq(entry), 'the delete was sent but its answer did not come: it may or may not have been applied; a repeat answers 404 dlq_not_found if it was'),
    );
    deps.audit.record({ action: 'dlq.delete', tenant, principal_id: c.principalId, target: id });
    res.status(204).end();
  });
}
