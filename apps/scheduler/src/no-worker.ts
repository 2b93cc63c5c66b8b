// D13 no-worker wait: count a schedule try and give up after the bound (50
// tries or 10 min) with FAILED + DLQ `no_workers`. The bound applies to each
// wait on its own (P142): a wait begins at the first look that finds no worker
// after the job was ready (created, or approved) or last dispatched, so a job
// held for hours or retried after a long attempt gets its full wait too.
// - Some live worker could serve the topic (its labels or requires do not
//   match yet, say): the job's next look is filed in `job:retry` (1 s·2ⁿ ≤ 30 s
//   ±20 %), drained by the replayer leader, so the timer survives the death of
//   the replica that set it.
// - Nobody serves the topic at all: the job is parked on its topic (P15) until
//   the replayer leader sees a worker for it, or until the moment the backoff
//   schedule would have hit the bound. A backlog on an unserved topic then
//   costs nothing per job while it waits, however long it is.
import type { HandlerOutcome } from '@cordum/bus';
import { recordedWorkerWait, type JobRecord, type WorkerWait, type WorkerWaitReason } from '@cordum/job-store';
import type { Lease } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import { createLogThrottle } from '@cordum/service-kit';
import { backoffBaseMs, backoffMs } from './backoff';
import type { SchedulerContext } from './context';
import { BUSY_NAK_MS } from './job-lock';
import { topicServed } from './routing';
import { leaveGroup } from './slots';

export async function noWorkerWait(ctx: SchedulerContext, lease: Lease, job: JobRecord): Promise<HandlerOutcome> {
  if (job.state !== 'PENDING' && job.state !== 'RETRYING') return { kind: 'ack' };
  // It waits for a worker, not in a concurrency group's queue, where it would hold up the jobs
  // behind it (P70); it queues again, at the back, once a worker can take it.
  if (job.state === 'PENDING') await leaveGroup(ctx, lease, job);
  const now = clusterNow();
  const wait = currentWait(job, now);
  const tries = wait.tries + 1;
  const { maxScheduleTries, maxScheduleWaitMs } = ctx.config.replay;
  if (tries > maxScheduleTries || now - wait.since >= maxScheduleWaitMs) return failNoWorker(ctx, lease, job, wait, tries - 1);
  const served = topicServed(ctx.pools(), ctx.workers.live(), job.topic);
  const reason = waitReason(ctx, job.topic, served);
  const workerWait: WorkerWait = { since: wait.since, tries, reason, lastTryAt: now };
  const p = await ctx.store.patchJob(job.id, job.state, { token: lease.token, patch: { scheduleTries: (job.scheduleTries ?? 0) + 1, workerWait } });
  if (!p.ok) return p.reason === 'fenced' ? { kind: 'nak', delayMs: BUSY_NAK_MS } : { kind: 'ack' };
  ctx.metrics.workerWaits.inc({ pools: poolsLabel(ctx, job.topic), reason });
  if (!served) {
    const plan = parkPlan(tries, now, wait.since, ctx.config.replay);
    await ctx.store.park(job.id, job.topic, job.state, plan.expiresAt);
    ctx.logger.info('no worker serves the topic, job parked until one appears', { job_id: job.id, topic: job.topic, tries, reason, expires_in_ms: plan.expiresAt - now });
    if (reason === 'workers_not_listening') warnNotListening(ctx, job.topic);
    return { kind: 'ack' };
  }
  await ctx.store.scheduleRetry(job.id, now + backoffMs(tries - 1));
  ctx.logger.info('no worker for topic, job waits', { job_id: job.id, topic: job.topic, tries });
  return { kind: 'ack' };
}

/** P230: why a look found no worker, for the API (`served`: a live worker serves the topic). */
function waitReason(ctx: SchedulerContext, topic: string, served: boolean): WorkerWaitReason {
  if (!served) return poolWorkers(ctx, topic).length > 0 ? 'workers_not_listening' : 'no_worker_for_topic';
  const taking = ctx.workers.live().filter((w) => !w.draining);
  return topicServed(ctx.pools(), taking, topic) ? 'no_matching_worker' : 'workers_draining';
}

/** Live workers (draining ones too) of the pools `topic` is mapped to. */
function poolWorkers(ctx: SchedulerContext, topic: string): string[] {
  const mapped = ctx.pools().topics[topic];
  return mapped ? ctx.workers.live().filter((w) => mapped.includes(w.pool)).map((w) => w.workerId) : [];
}

/** One `workers_not_listening` warning a minute per topic (only mapped topics come here). */
const mayWarnNotListening = createLogThrottle(60_000);

/**
 * P261: a topic mapped to a pool whose live workers name other job subjects is no mistake of the
 * job's: the operator's config and the workers' topics disagree (a release before P253 routed such
 * jobs on the pool alone). Said once a minute per topic, with the workers and the two fixes.
 */
function warnNotListening(ctx: SchedulerContext, topic: string): void {
  if (!mayWarnNotListening(topic)) return;
  const workers = poolWorkers(ctx, topic);
  ctx.logger.warn("workers of the topic's pools are live but none listens on the topic: add it to their topics (WORKER_TOPICS) or map the topic to a pool whose workers do; its jobs wait, then fail no_workers", {
    topic,
    pools: poolsLabel(ctx, topic),
    workers: workers.slice(0, 10),
    more_workers: Math.max(0, workers.length - 10),
  });
}

/** P255: the metric label naming a topic's pools as configured (comma-joined); empty when none maps it. */
function poolsLabel(ctx: SchedulerContext, topic: string): string {
  return ctx.pools().topics[topic]?.join(',') ?? '';
}

/**
 * P142: the wait for a worker `job` is in at `now`: its recorded one, unless that began before the
 * job was last ready (an approval) or dispatched, in which case a new one begins now.
 */
export function currentWait(job: JobRecord, now: number): WorkerWait {
  return recordedWorkerWait(job) ?? { since: now, tries: 0 };
}

/** P254: why the wait ended without a worker, in the words the error message and DLQ reason carry. */
const WAIT_REASON_TEXT: Record<WorkerWaitReason, string> = {
  no_worker_for_topic: 'no live worker served the topic',
  workers_draining: 'every worker of the topic was draining',
  no_matching_worker: "workers served the topic, but none met the job's requires or placement labels",
  workers_not_listening: "workers of the topic's pools were live, but none listens on the topic (add it to their topics, e.g. WORKER_TOPICS)",
};

/** FAILED + DLQ `no_workers` after `tries` schedule tries in the job's current `wait` (D13, currentWait). */
export async function failNoWorker(ctx: SchedulerContext, lease: Lease, job: JobRecord, wait: WorkerWait, tries: number): Promise<HandlerOutcome> {
  ctx.logger.warn('no worker within the bound, failing job', { job_id: job.id, topic: job.topic, tries, waited_ms: clusterNow() - wait.since });
  const w = await ctx.store.transition(job.id, 'FAILED', {
    token: lease.token,
    from: [job.state],
    patch: {
      scheduleTries: (job.scheduleTries ?? 0) + Math.max(0, tries - wait.tries),
      workerWait: { ...wait, tries },
      error: { code: 'no_workers', message: `no worker for ${job.topic} after ${tries} tries${wait.reason ? `: ${WAIT_REASON_TEXT[wait.reason] ?? wait.reason}` : ''}` },
    },
  });
  if (w.ok) ctx.metrics.noWorkersFailed.inc({ pools: poolsLabel(ctx, job.topic), reason: wait.reason ?? '' });
  return w.ok || w.reason !== 'fenced' ? { kind: 'ack' } : { kind: 'nak', delayMs: BUSY_NAK_MS };
}

/**
 * P15: when a job parked after try `tries` of its wait at `parkedAt` reaches its D13 bound, and
 * the tries it would have made by then, following the jitter-free backoff schedule: the next try
 * comes backoff(tries − 1) after the last, and the job fails at the first try past
 * `maxScheduleTries` or `maxScheduleWaitMs` after its wait began (`since`, P142), as the polling
 * path would.
 */
export function parkPlan(tries: number, parkedAt: number, since: number, bound: { maxScheduleTries: number; maxScheduleWaitMs: number }): { expiresAt: number; tries: number } {
  let at = parkedAt;
  let k = tries;
  for (;;) {
    at += backoffBaseMs(k - 1);
    k += 1;
    if (k > bound.maxScheduleTries || at - since >= bound.maxScheduleWaitMs) return { expiresAt: at, tries: k - 1 };
  }
}
