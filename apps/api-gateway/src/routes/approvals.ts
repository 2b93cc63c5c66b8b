// GET /api/v1/approvals, POST /api/v1/approvals/:job_id/approve|reject
// (CONTRACT §2, BEHAVIOURS §6, D18). Tenancy as everywhere: another tenant's
// job is 404 job_not_found, a tenant_id in a body must be the acting tenant.
import { z } from 'zod';
import type { Request, Response } from 'express';
import { jobKeys, jobToApi, type JobRecord, type JobStore } from '@cordum/job-store';
import { MAX_RULE_ID_CHARS } from '@cordum/config-overlay';
import type { RedisClient } from '@cordum/redis';
import { ApiError } from '../http/errors';
import type { Mount } from '../http/app';
import { actingTenant, caller } from '../auth/middleware';
import { chargedActingTenant } from '../ratelimit/middleware';
import { decodeCursor } from '../lists/cursor';
import { pageIndex } from '../lists/pager';
import { auditIfUnknown, type AuditSink } from '../audit/sink';
import type { ApprovalOutcome, ApprovalService } from '../approvals/service';
import { zodDetails } from '../submit/schema';
import { jsonBody } from './jobs';
import { JOB_ID_RE } from '@cordum/protocol';
import { storeCall } from '../http/store-call';
import { DEFAULT_LIST_LIMIT, LIST_SCAN_BUDGET, parseQuery, topicPageQueryFields } from './job-actions';

const opt = <T extends z.ZodType>(s: T) => s.nullish().transform((v) => v ?? undefined);

export const approvalsQuerySchema = z.object(topicPageQueryFields);

// These bodies are also the OpenAPI description's (P170).
// Strict: a misspelt `job_hash` dropped would approve whatever the job is now, not what was
// reviewed (no 409 stale_request). The other bodies here stay lenient: a dropped key loses nothing.
export const approveBodySchema = z
  .strictObject({
    reason: opt(z.string().max(1024)),
    job_hash: opt(z.string().regex(/^[0-9a-f]{64}$/, 'must be the 64-hex job_hash from GET /api/v1/approvals')).describe('job_hash from GET /approvals; a different current hash is 409 stale_request'),
    rule_id: opt(z.string().min(1).max(MAX_RULE_ID_CHARS)).describe(
      'rule_id from GET /approvals; another rule holding the job is 409 stale_snapshot. job_hash and rule_id are both required once the job was held again after an approval, else 409 approval_reheld (P81)',
    ),
    tenant_id: opt(z.string()).describe('must equal the acting tenant (D47)'),
  })
  .optional();

export const rejectBodySchema = z.object({ reason: opt(z.string().max(1024)), tenant_id: opt(z.string()).describe('must equal the acting tenant (D47)') }).optional();

export interface ApprovalRouteDeps {
  redis: RedisClient;
  store: JobStore;
  approvals: ApprovalService;
  audit: AuditSink;
  redisReady(): boolean;
}

export function approvalItem(job: JobRecord, jobHash: string) {
  const { result: _omit, ...view } = jobToApi(job, null);
  return {
    job: view,
    decision: job.safety?.decision ?? '',
    reason: job.safety?.reason ?? '',
    rule_id: job.safety?.ruleId ?? '',
    policy_snapshot: job.safety?.policySnapshot ?? '',
    job_hash: jobHash,
  };
}

function jobIdParam(req: Request): string {
  const id = String(req.params['job_id'] ?? '');
  if (!JOB_ID_RE.test(id)) throw new ApiError('job_not_found');
  return id;
}

function send(res: Response, out: ApprovalOutcome): void {
  switch (out.kind) {
    case 'approved':
    case 'rejected':
      res.status(200).json({ job_id: out.job.id, state: out.job.state });
      return;
    case 'already_approved':
    case 'already_rejected':
      res.status(200).json({ job_id: out.job.id, state: out.job.state, status: out.kind });
      return;
  }
}

export function mountApprovalRoutes(mount: Mount, deps: ApprovalRouteDeps): void {
  mount('GET /api/v1/approvals', async (req: Request, res: Response) => {
    const tenant = actingTenant(caller(res), undefined);
    const q = parseQuery(approvalsQuerySchema, req);
    // P297: a bad cursor is 400 whether or not Redis answers (it was 503 while Redis was down).
    const after = decodeCursor(q.cursor);
    const page = await storeCall(deps, 'list approvals', () =>
      pageIndex(deps.redis, {
        key: jobKeys.indexState(tenant, 'APPROVAL_REQUIRED'),
        after,
        limit: q.limit ?? DEFAULT_LIST_LIMIT,
        scanBudget: LIST_SCAN_BUDGET,
        load: async (ids) => {
          const jobs = await Promise.all(ids.map((id) => deps.store.getJob(id)));
          return Promise.all(
            jobs.map(async (j) => {
              // The index can lag a transition by one step (D16): the record decides.
              if (!j || j.tenant !== tenant || j.state !== 'APPROVAL_REQUIRED' || (q.topic && j.topic !== q.topic)) return null;
              return approvalItem(j, j.holdHash ?? (await deps.store.requestHash(j)));
            }),
          );
        },
      }),
    );
    res.status(200).json(page);
  });

  /**
   * P311: what an approval or rejection decided on, in its audit event: the record outlives the
   * job's (JOB_TTL) and DLQ entry's, so the audit export is where it is found later.
   */
  const approvalDetails = (job: JobRecord): Record<string, string> => {
    const a = job.approval;
    const out: Record<string, string> = { rule_id: a?.ruleId ?? '', job_hash: a?.jobHash ?? '', policy_snapshot: a?.policySnapshot ?? '' };
    if (a?.status === 'approved') out['revision'] = String(a.revision);
    if (a?.reason) out['reason'] = a.reason;
    return out;
  };

  mount('POST /api/v1/approvals/:job_id/approve', jsonBody(), async (req: Request, res: Response) => {
    const body = approveBodySchema.safeParse(req.body);
    if (!body.success) throw new ApiError('validation_failed', { details: zodDetails(body.error) });
    const { caller: c, tenant } = await chargedActingTenant(res, body.data?.tenant_id);
    const id = jobIdParam(req);
    const out = await auditIfUnknown(deps.audit, { action: 'approval.approve', tenant, principal_id: c.principalId, target: id }, () =>
      deps.approvals.approve(tenant, id, c.principalId, { reason: body.data?.reason, jobHash: body.data?.job_hash, ruleId: body.data?.rule_id }),
    );
    if (out.kind === 'approved') deps.audit.record({ action: 'approval.approve', tenant, principal_id: c.principalId, target: id, details: approvalDetails(out.job) });
    send(res, out);
  });

  mount('POST /api/v1/approvals/:job_id/reject', jsonBody(), async (req: Request, res: Response) => {
    const body = rejectBodySchema.safeParse(req.body);
    if (!body.success) throw new ApiError('validation_failed', { details: zodDetails(body.error) });
    const { caller: c, tenant } = await chargedActingTenant(res, body.data?.tenant_id);
    const id = jobIdParam(req);
    const out = await auditIfUnknown(deps.audit, { action: 'approval.reject', tenant, principal_id: c.principalId, target: id }, () => deps.approvals.reject(tenant, id, c.principalId, { reason: body.data?.reason }));
    if (out.kind === 'rejected') deps.audit.record({ action: 'approval.reject', tenant, principal_id: c.principalId, target: id, details: approvalDetails(out.job) });
    send(res, out);
  });
}
