// DLQ retry (D14): exactly one new job per entry, even under concurrent
// retries on different replicas. The atomic step is SET NX of
// dlq:retry:<id> = <new job id>; only the winner submits (through the normal
// submit service: Evaluate, record, publish). Losers wait ≤ 5 s for that job
// to exist and answer with it (`already_retried`). The claim is removed again
// when the winner ends without a job, so a later retry can succeed.
// A winner that died before its job existed would hold the claim for its whole
// TTL (DLQ_TTL, 30 days by default): a loser frees a claim older than STALE_CLAIM_MS (30 s) that
// still has no job, and the winner's create carries the claim, so a winner
// that was only paused writes nothing once its claim is gone (P37, as P21).
// A claim whose job was created is marked ('<job id>:created', P138): the new job's record lives
// JOB_TTL (7 days by default) and the claim DLQ_TTL (30 days by default), and without the mark a retry after the record
// expired took the claim for a dead winner's and ran the dead job again. On standalone Redis the
// create script marks it with the record (P249); the winner marks it again once its submit
// returns (on a cluster, the only mark), and so does a loser that finds the job (a winner that
// died in between).
// A marked claim whose job is gone answers `already_retried` without a state.
// The old job is never written, so no job lock is needed (D5 covers writes).
// An entry of a job failed at submit (D11, bus_unavailable) is refused: that
// job was never accepted and its client retries it with its own request, so a
// retry here would run it twice. The store files no such entry any more; this
// covers one written before it stopped.
import { randomUUID } from 'node:crypto';
import { failedAtSubmit, jobKeys, type DlqEntry, type JobRecord, type JobStore, type Priority } from '@cordum/job-store';
import { clusterNow, defineScripts, scriptSpec, type RedisClient } from '@cordum/redis';
import { errorText, type Logger } from '@cordum/service-kit';
import { ApiError } from '../http/errors';
import { SubmitError } from '../submit/errors';
import { createKeyClaims } from '../submit/idempotency';
import { answersWaiter, STALE_CLAIM_MS, stillPublishing, type SubmitCommand, type SubmitOutcome, type SubmitService } from '../submit/service';
import markLua from './lua/mark-claim-1.lua';

export const RETRY_WAIT_MS = 5_000;

export type RetryResult =
  | { kind: 'retried'; entry: DlqEntry; outcome: SubmitOutcome }
  | { kind: 'already_retried'; entry: DlqEntry; job: JobRecord }
  /** The entry was retried, and that job's record has expired since (P138). */
  | { kind: 'already_retried_expired'; entry: DlqEntry; jobId: string }
  | { kind: 'not_found' }
  | { kind: 'in_progress'; jobId: string }
  | { kind: 'source_expired' };

export interface DlqRetrier {
  retry(tenant: string, jobId: string, principalId: string): Promise<RetryResult>;
}

interface StoredInput {
  prompt?: unknown;
  context?: unknown;
}

const CREATED = ':created';

/** The job a claim names, and whether its job was created (P138). */
function holderOf(value: string): { jobId: string; created: boolean } {
  return value.endsWith(CREATED) ? { jobId: value.slice(0, -CREATED.length), created: true } : { jobId: value, created: false };
}

/** `dlqTtlMs`: DLQ_TTL (P238, default 30 d), the claim's life: a claim made while the entry lives outlives it. */
export function createDlqRetrier(deps: { redis: RedisClient; store: JobStore; submit: SubmitService; logger: Logger; dlqTtlMs: number }): DlqRetrier {
  const claims = createKeyClaims(deps.redis, deps.dlqTtlMs);
  const scripts = defineScripts(deps.redis, [scriptSpec('mark-claim-1.lua', markLua)]);
  /** Best effort: a claim left unmarked only keeps the window this closes open. */
  const markCreated = async (claimKey: string, jobId: string): Promise<void> => {
    try {
      await scripts.run('mark-claim', [claimKey], [jobId, jobId + CREATED]);
    } catch (err) {
      deps.logger.warn('could not mark a DLQ retry claim as created', { claim: claimKey, job_id: jobId, err: (err as Error).message });
    }
  };

  /** Frees a claim whose job has not appeared STALE_CLAIM_MS after it was made (compare-and-delete on its job id). */
  const freeIfStale = async (claimKey: string, holder: string): Promise<boolean> => {
    if ((await claims.ageMs(claimKey)) < STALE_CLAIM_MS || !(await claims.release(claimKey, holder))) return false;
    deps.logger.warn('freed a stale DLQ retry claim without a job', { claim: claimKey, job_id: holder });
    return true;
  };

  const waitForJob = async (tenant: string, claimKey: string, jobId: string): Promise<JobRecord | 'released' | 'timeout'> => {
    // P284: in Redis's time, as answersWaiter compares it (a host clock behind ended the wait at once).
    const deadline = clusterNow() + RETRY_WAIT_MS;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      const job = await deps.store.getJob(jobId);
      // As an idempotency duplicate (P40): not a job still publishing, never one failed at submit.
      if (answersWaiter(job, tenant, deadline)) return job;
      const now = await claims.current(claimKey);
      if (now === null || holderOf(now).jobId !== jobId) return 'released';
      if (clusterNow() > deadline && (job === null || !stillPublishing(job))) return 'timeout';
      await new Promise((r) => setTimeout(r, delay));
    }
  };

  return {
    async retry(tenant, id, principalId) {
      const entry = await deps.store.getDlq(id);
      if (!entry || entry.tenant !== tenant) return { kind: 'not_found' };
      if (failedAtSubmit(entry.last_state, entry.reason_code, entry.attempts)) {
        throw new ApiError('dlq_not_retryable', { extra: { job_id: id, reason_code: entry.reason_code } });
      }
      const claimKey = jobKeys.dlqRetry(id);
      for (let round = 0; round < 3; round++) {
        const newId = randomUUID();
        const taken = await claims.take(claimKey, newId).catch((err: unknown) => {
          // P335 (as P165 for idempotency claims): a claim whose reply was lost may still run,
          // naming a job this request never creates; every retry of the entry then waited 5 s and
          // got 409 dlq_retry_in_progress with a job id that never exists, until the claim went
          // stale (30 s). Its release, sent after it on the same connection, runs after it.
          void claims.release(claimKey, newId).catch((e: unknown) => deps.logger.warn('dlq retry claim release failed', { claim: claimKey, err: errorText(e) }));
          throw err;
        });
        if (!taken) {
          const value = await claims.current(claimKey);
          if (value === null) continue;
          const holder = holderOf(value);
          if (holder.created) {
            const job = await deps.store.getJob(holder.jobId);
            if (job === null || job.tenant !== tenant) return { kind: 'already_retried_expired', entry, jobId: holder.jobId };
            // Its winner failed it at submit (D11: it never ran and never will) and died, or its
            // release failed, before releasing the claim the create had marked (P249): free it
            // now (compare-and-delete on the marked value), else the entry could not be retried.
            if (failedAtSubmit(job.state, job.error?.code, job.attempts)) {
              if (await claims.release(claimKey, value)) deps.logger.warn('freed a DLQ retry claim whose job failed at submit', { claim: claimKey, job_id: holder.jobId });
              continue;
            }
          }
          // Marked or not, a job whose submit has not settled is no answer yet (P40): the create marks
          // the claim (P249) before the publish, which may still fail the job at submit.
          const r = await waitForJob(tenant, claimKey, holder.jobId);
          if (r === 'released') continue;
          if (r === 'timeout') {
            // A marked claim's job exists: never taken for a dead winner's.
            if (!holder.created && (await freeIfStale(claimKey, holder.jobId))) continue;
            return { kind: 'in_progress', jobId: holder.jobId };
          }
          await markCreated(claimKey, holder.jobId);
          return { kind: 'already_retried', entry, job: r };
        }
        let jobCreated = false;
        try {
          const old = await deps.store.getJob(id);
          const input = (await deps.store.readContext(id)) as StoredInput | null;
          if (!old || !input || typeof input.prompt !== 'string') return { kind: 'source_expired' };
          const outcome = await deps.submit.submit(commandFrom(old, input, tenant, principalId, newId, claimKey));
          jobCreated = true;
          await markCreated(claimKey, newId);
          return { kind: 'retried', entry, outcome };
        } catch (err) {
          // Taken for dead and replaced while it was paused: nothing was written; answer with the
          // job of the claim's new holder (next round).
          if (err instanceof SubmitError && err.code === 'claim_lost') continue;
          jobCreated = err instanceof SubmitError && err.code === 'submit_state_unknown';
          throw err;
        } finally {
          // Marked already if the record was written (P249) and the submit failed after it (a job failed at submit, D11).
          if (!jobCreated) await claims.release(claimKey, newId).then((gone) => gone || claims.release(claimKey, newId + CREATED)).catch(() => undefined);
        }
      }
      const holder = await claims.current(claimKey);
      return { kind: 'in_progress', jobId: holder === null ? '' : holderOf(holder).jobId };
    },
  };
}

function commandFrom(old: JobRecord, input: StoredInput, tenant: string, principalId: string, jobId: string, claimKey: string): SubmitCommand {
  return {
    jobId,
    claimKey,
    claimMark: jobId + CREATED,
    tenant,
    principalId,
    prompt: input.prompt as string,
    topic: old.topic,
    context: input.context ?? null,
    priority: old.priority as Priority,
    labels: old.labels ?? {},
    memoryId: old.memoryId,
    contextMode: old.contextMode,
    capability: old.capability,
    riskTags: old.riskTags ?? [],
    requires: old.requires ?? [],
    actorId: old.actorId,
    actorType: old.actorType,
    deadlineMs: old.deadlineAt !== undefined ? Math.max(1, old.deadlineAt - old.createdAt) : undefined,
    // The new job's submitter is whoever retried it; the old job's submitter (and actor) may
    // still not approve it, nor anyone's earlier in a chain of retries (P106).
    retriedFrom: { jobId: old.id, submitters: [...new Set([...(old.retriedFrom?.submitters ?? []), old.principalId, ...(old.actorId ? [old.actorId] : [])])] },
  };
}
