// Human approvals (BEHAVIOURS §6, CONTRACT §2, D5, D9, D18). An approval binds
// to the hash of the job request as it was held (job-store jobRequestHash) and
// to the rule that held it: a changed request is 409 stale_request, a policy
// that no longer holds the job by that rule is 409 stale_snapshot. The submitter
// cannot approve their own job. The state change is one fenced transition under
// the job lock (APPROVAL_REQUIRED → PENDING), so of any number of concurrent
// approvals on any replicas exactly one wins and republishes the submit (msg id
// `jobreq:<id>:0:<revision>`); the others answer `already_approved`.
import { subjects } from '@cordum/bus';
import { TERMINAL_STATES, approvalSuperseded, jobBudgetInit, policyCheckInit, type ApprovalRecord, type JobRecord, type JobStore } from '@cordum/job-store';
import type { Lease, Locks } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { ApiError } from '../http/errors';
import type { PolicyEvaluator } from '../safety/evaluator';
import { encodeJobRequest, submitMsgId } from '../submit/packet';
import { storeCall, storeWrite } from '../http/store-call';
import { acquireJobLockForRequest, releaseJobLock } from '../job-lock';
import { errorText } from '@cordum/service-kit';


export type ApprovalOutcome =
  | { kind: 'approved'; job: JobRecord }
  | { kind: 'already_approved'; job: JobRecord }
  | { kind: 'rejected'; job: JobRecord }
  | { kind: 'already_rejected'; job: JobRecord };

export interface ApprovalDeps {
  store: JobStore;
  locks: Locks;
  bus: { publish(subject: string, data: Uint8Array, opts?: { msgId?: string }): Promise<void> };
  evaluator: PolicyEvaluator;
  logger: Logger;
  instanceId: string;
  redisReady(): boolean;
  now?: () => number;
}

export interface ApprovalService {
  /**
   * `jobHash` / `ruleId`: the hold the approver reviewed (GET /approvals). Optional for a job's
   * first hold; required once it was held again after an approval (P81).
   */
  approve(tenant: string, jobId: string, principalId: string, o: { reason?: string; jobHash?: string; ruleId?: string }): Promise<ApprovalOutcome>;
  reject(tenant: string, jobId: string, principalId: string, o: { reason?: string }): Promise<ApprovalOutcome>;
}

/**
 * The submitter (key principal) or the actor the job was submitted for may not approve it, nor,
 * for a job retried from the DLQ, the submitters of the jobs it was retried from (P106).
 */
export function isSelfApproval(job: JobRecord, principalId: string): boolean {
  return (
    job.principalId === principalId ||
    (job.actorId !== undefined && job.actorId === principalId) ||
    (job.retriedFrom?.submitters.includes(principalId) ?? false)
  );
}

export function createApprovalService(deps: ApprovalDeps): ApprovalService {
  const now = deps.now ?? clusterNow;

  const store = <T>(what: string, p: () => Promise<T>): Promise<T> => storeCall(deps, what, p);

  const ownJob = async (tenant: string, id: string): Promise<JobRecord> => {
    const job = await store('read job', () => deps.store.getJob(id));
    if (!job || job.tenant !== tenant) throw new ApiError('job_not_found');
    return job;
  };

  /**
   * A job that is not (or no longer) waiting: idempotent answers or 409s. An approval the job was
   * held again after (P258: `superseded`) is not this call's: a job whose later hold expired or was
   * cancelled was never approved for it.
   */
  const notPending = (job: JobRecord, action: 'approve' | 'reject'): ApprovalOutcome => {
    if (action === 'approve' && job.approval?.status === 'approved' && !approvalSuperseded(job)) return { kind: 'already_approved', job };
    if (action === 'reject' && job.approval?.status === 'rejected' && job.state === 'DENIED') return { kind: 'already_rejected', job };
    if (TERMINAL_STATES.has(job.state)) throw new ApiError('job_terminal', { extra: { state: job.state } });
    throw new ApiError('approval_not_pending', { extra: { state: job.state, ...(job.approval ? { approval_status: job.approval.status } : {}) } });
  };

  const withLock = async <T>(id: string, fn: (lease: Lease) => Promise<T>): Promise<T> => {
    const lease = await acquireJobLockForRequest(deps, id);
    if (!lease) throw new ApiError('job_busy');
    try {
      return await fn(lease);
    } finally {
      await releaseJobLock(deps, lease, id);
    }
  };

  /**
   * P53: a reject's DLQ entry and index moves follow its DENIED write. When they failed (Redis
   * error, replica killed) nothing else redoes them: a held job is in no in-flight index, so no
   * sweep finds it. A repeated reject redoes them (idempotent; a DLQ entry an operator deleted
   * stays deleted, P22) before answering `already_rejected`.
   */
  const completeRejected = async (out: ApprovalOutcome): Promise<ApprovalOutcome> => {
    if (out.kind === 'already_rejected') await store('complete reject', () => deps.store.repairIndex(out.job.id, 'APPROVAL_REQUIRED', out.job));
    return out;
  };

  return {
    async approve(tenant, id, principalId, o) {
      const job = await ownJob(tenant, id);
      if (isSelfApproval(job, principalId)) throw new ApiError('self_approval_denied');
      if (job.state !== 'APPROVAL_REQUIRED') return notPending(job, 'approve');
      const ruleId = job.safety?.ruleId ?? '';

      // Binding 0 (P81): held again since an approval (the scheduler's Check held it by another
      // rule, or for a changed request). A call that does not name this hold, such as the retry
      // of an approve whose answer was lost, must not approve a hold its approver never saw.
      const reheld = (j: JobRecord): ApiError =>
        new ApiError('approval_reheld', { extra: { job_hash: j.holdHash ?? '', rule_id: j.safety?.ruleId ?? '', policy_snapshot: j.safety?.policySnapshot ?? '', approved_revision: j.approval?.revision ?? 0 } });
      if (job.approval?.status === 'approved' && (o.jobHash === undefined || o.ruleId === undefined)) throw reheld(job);
      if (o.ruleId !== undefined && o.ruleId !== ruleId) {
        // P258: the approver reviewed a hold by another rule: the job was held again since (after
        // someone's approval), or the call names a rule that never held it.
        if (job.approval?.status === 'approved') throw reheld(job);
        throw new ApiError('stale_snapshot', {
          message: `the job is held by rule ${ruleId}, not by the rule the approval names`,
          extra: { decision: 'require_human', rule_id: ruleId, policy_snapshot: job.safety?.policySnapshot ?? '', held_by_rule: ruleId },
        });
      }

      // Binding 1: the request is still the one that was held (and, if the approver names it, the one they reviewed).
      const hash = await store('hash request', () => deps.store.requestHash(job));
      if ((job.holdHash !== undefined && hash !== job.holdHash) || (o.jobHash !== undefined && o.jobHash !== hash)) {
        throw new ApiError('stale_request', { extra: { job_hash: hash } });
      }
      // Binding 2 (D18): the current policy still holds this job by the same rule. A kernel that cannot
      // answer does not block the approval: the scheduler's Check re-applies D18 before anything runs.
      let snapshot = job.safety?.policySnapshot ?? '';
      const verdict = await deps.evaluator.evaluate(policyCheckInit(job.id, job));
      if (verdict.kind === 'unavailable') {
        deps.logger.warn('safety kernel unavailable at approval; the scheduler re-checks before dispatch', { job_id: id, reason: verdict.reason });
      } else if (verdict.kind === 'throttle') {
        // Transient (a velocity window above the holding rule is full): the scheduler's Check waits it out, then applies D18.
      } else if (verdict.kind === 'require_human' && verdict.ruleId === ruleId) {
        snapshot = verdict.policySnapshot;
      } else {
        throw new ApiError('stale_snapshot', {
          extra: { decision: verdict.kind, rule_id: verdict.ruleId, policy_snapshot: verdict.policySnapshot, held_by_rule: ruleId },
        });
      }

      const out = await withLock(id, async (lease): Promise<ApprovalOutcome> => {
        const cur = await ownJob(tenant, id);
        if (cur.state !== 'APPROVAL_REQUIRED') return notPending(cur, 'approve');
        // Re-held meanwhile: approved by someone else and held again (P258: the hold this call
        // reviewed is gone, whatever the request), or, without an approval between, a request
        // that changed (the scheduler binds a new hold to the request as it is then).
        if ((cur.approval?.revision ?? 0) !== (job.approval?.revision ?? 0)) throw reheld(cur);
        if (cur.holdHash !== job.holdHash || (cur.safety?.ruleId ?? '') !== ruleId) throw new ApiError('stale_request', { extra: { job_hash: cur.holdHash ?? hash } });
        const approval: ApprovalRecord = { status: 'approved', by: principalId, at: now(), jobHash: hash, policySnapshot: snapshot, ruleId, revision: (cur.approval?.revision ?? 0) + 1 };
        if (o.reason) approval.reason = o.reason;
        const r = await storeWrite(deps, 'approve', () => deps.store.transition(id, 'PENDING', { token: lease.token, from: ['APPROVAL_REQUIRED'], patch: { approval } }));
        if (!r.ok) {
          if (r.reason === 'state_mismatch' && r.current) return notPending(r.current, 'approve');
          if (r.reason === 'not_found') throw new ApiError('job_not_found');
          throw new ApiError('job_busy', { message: `job changed while approving (${r.reason}); retry` });
        }
        // D45: the job (input, record, fence, history) lives another job TTL from the approval (P75).
        await deps.store.refreshLifetime(r.job).catch((err: unknown) => {
          deps.logger.warn('approved job\'s lifetime not renewed; it keeps the TTL it had', { job_id: id, err: errorText(err) });
        });
        return { kind: 'approved', job: r.job };
      });
      if (out.kind !== 'approved') return out;

      // After the lock is released (the scheduler's intake takes it). A lost publish leaves the job
      // PENDING; the scheduler's pending replayer re-drives it (BEHAVIOURS §1.8).
      const j = out.job;
      try {
        await deps.bus.publish(subjects.submit, encodeJobRequest(j, deps.instanceId, jobBudgetInit(j)?.deadlineMs), { msgId: submitMsgId(j.id, 0, j.approval?.revision ?? 1) });
      } catch (err) {
        deps.logger.warn('approved job not republished; the pending replayer will re-drive it', { job_id: j.id, err: errorText(err) });
      }
      return out;
    },

    async reject(tenant, id, principalId, o) {
      const job = await ownJob(tenant, id);
      if (job.state !== 'APPROVAL_REQUIRED') return completeRejected(notPending(job, 'reject'));
      return withLock(id, async (lease): Promise<ApprovalOutcome> => {
        const cur = await ownJob(tenant, id);
        if (cur.state !== 'APPROVAL_REQUIRED') return completeRejected(notPending(cur, 'reject'));
        const reason = o.reason ?? `rejected by ${principalId}`;
        const approval: ApprovalRecord = {
          status: 'rejected',
          by: principalId,
          at: now(),
          jobHash: cur.holdHash ?? '',
          policySnapshot: cur.safety?.policySnapshot ?? '',
          ruleId: cur.safety?.ruleId ?? '',
          reason,
          revision: (cur.approval?.revision ?? 0) + 1,
        };
        const r = await storeWrite(deps, 'reject', () =>
          deps.store.transition(id, 'DENIED', { token: lease.token, from: ['APPROVAL_REQUIRED'], patch: { approval, error: { code: 'approval_rejected', message: reason } }, dlqReason: reason }),
        );
        if (!r.ok) {
          if (r.reason === 'state_mismatch' && r.current) return notPending(r.current, 'reject');
          if (r.reason === 'not_found') throw new ApiError('job_not_found');
          throw new ApiError('job_busy', { message: `job changed while rejecting (${r.reason}); retry` });
        }
        return { kind: 'rejected', job: r.job };
      });
    },
  };
}
