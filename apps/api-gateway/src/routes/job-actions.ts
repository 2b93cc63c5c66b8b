// GET /api/v1/jobs (cursor list), POST /api/v1/jobs/:id/cancel and
// GET /api/v1/jobs/:id/decisions (CONTRACT §2, D5, D9, D16).
import { z } from 'zod';
import type { Request, Response } from 'express';
import { subjects } from '@cordum/bus';
import { ATTEMPT_OUT_STATES, CANCEL_OWED_AFTER_MS, JOB_STATES, TERMINAL_STATES, cancelSent, jobCancelPacket, jobKeys, jobToApi, type JobRecord, type JobState, type JobStore } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';
import { JOB_ID_RE, type BusPacket } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { ApiError } from '../http/errors';
import type { Mount } from '../http/app';
import { actingTenant, caller } from '../auth/middleware';
import { chargedActingTenant } from '../ratelimit/middleware';
import { TOPIC_RE, zodDetails } from '../submit/schema';
import { decodeCursor } from '../lists/cursor';
import { pageIndex } from '../lists/pager';
import { storeCall, storeWrite } from '../http/store-call';
import { acquireJobLockForRequest, releaseJobLock } from '../job-lock';
import { auditIfUnknown, type AuditSink } from '../audit/sink';
import { jsonBody } from './jobs';
import { errorText } from '@cordum/service-kit';

export const MAX_LIST_LIMIT = 500;
export const DEFAULT_LIST_LIMIT = 50;
/** Index entries one list request may examine (bounded work with a topic filter). */
export const LIST_SCAN_BUDGET = 2_000;

/** Query fields shared by the cursor-paged lists filtered by topic (jobs, approvals). */
export const topicPageQueryFields = {
  topic: z.string().max(255).regex(TOPIC_RE, 'must match ^job(\\.[A-Za-z0-9_-]+)+$').optional(),
  limit: z
    .string()
    .regex(/^\d{1,4}$/, 'must be an integer 1-500')
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_LIST_LIMIT, `must be at most ${MAX_LIST_LIMIT}`))
    .optional()
    .describe(`integer 1-${MAX_LIST_LIMIT}, default ${DEFAULT_LIST_LIMIT}`),
  cursor: z.string().max(512).optional().describe('opaque; from next_cursor of the previous page'),
};

export const listQuerySchema = z.object({
  state: z
    .string()
    .transform((s) => s.toUpperCase())
    .pipe(z.enum(JOB_STATES as [JobState, ...JobState[]]))
    .optional()
    .describe(`a job state, case-insensitive: ${JOB_STATES.join(', ')}`),
  ...topicPageQueryFields,
});

/** Also the OpenAPI description's body (P170). */
export const cancelBodySchema = z.object({ reason: z.string().max(1024).nullish(), tenant_id: z.string().nullish().describe('must equal the acting tenant (D47)') }).optional();

export interface JobActionDeps {
  redis: RedisClient;
  store: JobStore;
  locks: Locks;
  bus: { publish(subject: string, data: Uint8Array, opts?: { msgId?: string }): Promise<void> };
  audit: AuditSink;
  logger: Logger;
  instanceId: string;
  redisReady(): boolean;
  /** Encodes a packet for workers: signed when CAP_SIGNING_KEY_FILE is set (P61). */
  encodeForWorkers(p: BusPacket): Uint8Array;
}

/**
 * Strict query parsing: repeated or mistyped params are 400, and so are unknown ones (P210): a
 * misspelt filter (`?status=RUNNING` for `state`) was dropped, and the answer listed every job as
 * if it matched. One detail per unknown name, saying which names the route takes.
 */
export function parseQuery<S extends z.ZodObject>(schema: S, req: Request): z.output<S> {
  const known = Object.keys(schema.shape);
  const unknown = Object.keys(req.query as Record<string, unknown>).filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    const takes = known.length > 0 ? `this route takes ${known.join(', ')}` : 'this route takes none';
    throw new ApiError('validation_failed', { details: unknown.slice(0, 10).map((k) => ({ path: k.slice(0, 100), message: `unknown query parameter; ${takes}` })) });
  }
  const r = schema.safeParse(req.query);
  if (!r.success) throw new ApiError('validation_failed', { details: zodDetails(r.error) });
  return r.data;
}

/** The list item: the job shape without `result` (read one job for its result). */
function listItem(job: JobRecord): object {
  const { result: _omit, ...rest } = jobToApi(job, null);
  return rest;
}

/** The caller's job or 404 (another tenant's job is indistinguishable from a missing one). */
async function ownJob(deps: JobActionDeps, req: Request, tenant: string): Promise<JobRecord> {
  const id = String(req.params['id'] ?? '');
  if (!JOB_ID_RE.test(id)) throw new ApiError('job_not_found');
  const job = await storeCall(deps, 'read job', () => deps.store.getJob(id));
  if (!job || job.tenant !== tenant) throw new ApiError('job_not_found');
  return job;
}

export function mountJobActionRoutes(mount: Mount, deps: JobActionDeps): void {
  /**
   * P239: a listing of a state that is not terminal drops the members whose record has ended. Two
   * writers' index writes can land out of order (a scheduler's DISPATCHED → RUNNING after the
   * gateway's RUNNING → CANCELLED), which left the job in the RUNNING index until the retention
   * pass at JOB_TTL: hidden from the listing by the record's state, but read by every listing of
   * that state until then. An ended record never leaves its state, so the member is stale for
   * good and no later write can need it; a record in another live state may be a transition whose
   * index write is still on its way, and is left. Best effort: a failed ZREM leaves it for the
   * next listing or the retention pass.
   */
  const dropEnded = (key: string, listed: JobState, jobs: readonly (JobRecord | null)[]): void => {
    if (TERMINAL_STATES.has(listed)) return;
    const stale = jobs.filter((j): j is JobRecord => j !== null && j.state !== listed && TERMINAL_STATES.has(j.state)).map((j) => j.id);
    if (stale.length === 0) return;
    deps.redis.zrem(key, ...stale).catch((err: unknown) => deps.logger.debug('could not drop ended jobs from a state index', { key, err: errorText(err) }));
  };
  mount('GET /api/v1/jobs', async (req: Request, res: Response) => {
    const tenant = actingTenant(caller(res), undefined);
    const q = parseQuery(listQuerySchema, req);
    const after = decodeCursor(q.cursor);
    const key = q.state ? jobKeys.indexState(tenant, q.state) : jobKeys.indexAll(tenant);
    const page = await storeCall(deps, 'list jobs', () =>
      pageIndex(deps.redis, {
        key,
        after,
        limit: q.limit ?? DEFAULT_LIST_LIMIT,
        scanBudget: LIST_SCAN_BUDGET,
        load: async (ids) => {
          const jobs = await Promise.all(ids.map((id) => deps.store.getJob(id)));
          // Index entries can lag a transition by one step (D16): the record decides.
          if (q.state) dropEnded(key, q.state, jobs);
          return jobs.map((j) => (j && j.tenant === tenant && (!q.state || j.state === q.state) && (!q.topic || j.topic === q.topic) ? listItem(j) : null));
        },
      }),
    );
    res.status(200).json(page);
  });

  mount('GET /api/v1/jobs/:id/decisions', async (req: Request, res: Response) => {
    const tenant = actingTenant(caller(res), undefined);
    const job = await ownJob(deps, req, tenant);
    let items = await storeCall(deps, 'read decisions', () => deps.store.listDecisions(job.id));
    if (items.length === 0 && job.safety) {
      // Jobs written before the history existed still show their submit-time decision.
      const s = job.safety;
      items = [{ decision: s.decision, reason: s.reason, rule_id: s.ruleId, policy_snapshot: s.policySnapshot, state: job.state, recorded_at: new Date(job.createdAt).toISOString() }];
    }
    res.status(200).json({ job_id: job.id, items });
  });

  /**
   * D5/D9: one JobCancel per dispatch; the msg id makes a repeated publish a JetStream duplicate.
   * The state is committed first: results for a CANCELLED job are ignored, so a failed publish
   * loses only the worker's early stop, and not for long: the cancel was filed in
   * `job:cancel:outbox` before the write (P134), and the schedulers send the JobCancel themselves
   * CANCEL_OWED_AFTER_MS later unless this publish re-files the entry first; they send it again
   * while the attempt has not answered (P135). A repeated cancel of a
   * CANCELLED job (answered 409) sends it again at once (P52); the schedulers also send it again
   * when the worker's next progress names the ended attempt (P127).
   */
  const sendCancel = async (job: JobRecord, requestedBy: string, o: { again: boolean; attemptOut?: boolean }): Promise<void> => {
    const { packet, msgId } = jobCancelPacket(job, { senderId: deps.instanceId, reason: job.error?.message ?? 'cancelled by API', requestedBy });
    try {
      await deps.bus.publish(subjects.cancel, deps.encodeForWorkers(packet), { msgId });
      if (o.again) deps.logger.info('cancel sent again for a CANCELLED job', { job_id: job.id });
    } catch (err) {
      deps.logger.error('cancel publish failed; job is CANCELLED, and the schedulers send the JobCancel once the bus is back', { job_id: job.id, err: errorText(err) });
      return;
    }
    if (o.again) return;
    // Sent: the schedulers send it again only if the attempt has not answered by the entry's next
    // due time (P135: a worker cut off from NATS now misses this one). Left due on an error, it
    // costs one more publish that the stream drops as a duplicate.
    await cancelSent(deps.store, job, o.attemptOut === true).catch((err: unknown) => deps.logger.warn('sent JobCancel not re-filed in the cancel outbox; the schedulers send it again as a duplicate', { job_id: job.id, err: errorText(err) }));
  };

  mount('POST /api/v1/jobs/:id/cancel', jsonBody(), async (req: Request, res: Response) => {
    const body = cancelBodySchema.safeParse(req.body);
    if (!body.success) throw new ApiError('validation_failed', { details: zodDetails(body.error) });
    // D47: a tenant_id in the body must be the acting tenant (403 otherwise); P270: a `*` key naming it is charged to it.
    const { caller: c, tenant } = await chargedActingTenant(res, body.data?.tenant_id ?? undefined);
    const job = await ownJob(deps, req, tenant);
    if (TERMINAL_STATES.has(job.state)) {
      if (job.state === 'CANCELLED') {
        // P147: a job cancelled while held is in no in-flight index, so no sweep repairs a listing
        // move its first cancel lost (an error, a replica killed); the repeat does, as a repeated
        // reject does (P53): into the CANCELLED listing, out of the approvals listing.
        if (job.holdHash !== undefined) await storeCall(deps, 'complete cancel', () => deps.store.repairIndex(job.id, 'APPROVAL_REQUIRED', job));
        await sendCancel(job, c.principalId, { again: true });
      }
      throw new ApiError('job_terminal', { extra: { state: job.state } });
    }

    const lease = await acquireJobLockForRequest(deps, job.id);
    if (!lease) throw new ApiError('job_busy');
    let cancelled: JobRecord;
    try {
      // P134: owed before it is written, so a replica killed after the write still gets the worker told.
      const filed = await storeCall(deps, 'cancel job', () => deps.store.fileCancel(job.id, clusterNow() + CANCEL_OWED_AFTER_MS));
      const r = await auditIfUnknown(deps.audit, { action: 'job.cancel', tenant, principal_id: c.principalId, target: job.id }, () =>
        storeWrite(deps, 'cancel job', () => deps.store.transition(job.id, 'CANCELLED', { token: lease.token, expireResult: true, patch: { error: { code: 'cancelled', message: body.data?.reason ?? 'cancelled by API' } } })),
      );
      if (!r.ok) {
        // Read before the lock, the job ended meanwhile (another cancel whose worker has answered,
        // a TIMEOUT): nothing is owed for this request. An entry it added stayed due, and the
        // schedulers sent a stopped worker JobCancels for 10 minutes (P308). Best effort: left
        // behind, it costs those resends, no more.
        if (filed) await deps.store.removeCancel(job.id).catch((err: unknown) => deps.logger.warn('cancel outbox entry of a refused cancel not removed; the schedulers send the JobCancel again', { job_id: job.id, err: errorText(err) }));
        const cur = r.current;
        if (cur && TERMINAL_STATES.has(cur.state)) throw new ApiError('job_terminal', { extra: { state: cur.state } });
        if (r.reason === 'not_found') throw new ApiError('job_not_found');
        throw new ApiError('job_busy', { message: `job changed while cancelling (${r.reason}); retry` });
      }
      cancelled = r.job;
      await sendCancel(cancelled, c.principalId, { again: false, attemptOut: ATTEMPT_OUT_STATES.has(r.from) });
    } finally {
      await releaseJobLock(deps, lease, job.id);
    }
    deps.audit.record({ action: 'job.cancel', tenant, principal_id: c.principalId, target: cancelled.id });
    res.status(200).json({ id: cancelled.id, state: 'CANCELLED' });
  });
}
