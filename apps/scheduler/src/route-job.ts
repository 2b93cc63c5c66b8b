import type { JobRecord } from '@cordum/job-store';
import type { SchedulerContext } from './context';
import type { Reservation, WorkerView } from './registry';
import { route, type RouteDecision } from './routing';

/** What routing reads from the scheduler's context. */
export type RouteContext = Pick<SchedulerContext, 'workers' | 'pools'> & { config: Pick<SchedulerContext['config'], 'dispatchUntracked'> };

/**
 * `avoid`: a worker that just failed to acknowledge a dispatch (BEHAVIOURS §3 fallback). It, and
 * every worker a dispatch to which went unclaimed lately (P34, `WorkerRegistry.unresponsive`),
 * is skipped while any other candidate can take the job.
 */
export function routeFor(ctx: RouteContext, job: Pick<JobRecord, 'topic' | 'labels' | 'requires'>, avoid?: string): RouteDecision {
  // A worker whose last heartbeat said it is stopping has closed its intake: never a candidate.
  const known = ctx.workers.live();
  const live = known.filter((w) => !w.draining);
  const skip = (w: WorkerView): boolean => w.workerId === avoid || ctx.workers.unresponsive(w);
  const others = live.some(skip) ? live.filter((w) => !skip(w)) : live;
  const first = route({ topic: job.topic, labels: job.labels, requires: job.requires, workers: others, pools: ctx.pools(), dispatchUntracked: ctx.config.dispatchUntracked, known });
  if (first.kind === 'worker' || others.length === live.length) return first;
  return route({
    topic: job.topic,
    labels: job.labels,
    requires: job.requires,
    workers: live,
    pools: ctx.pools(),
    dispatchUntracked: ctx.config.dispatchUntracked,
    known,
  });
}

/**
 * routeFor, with the chosen worker's slot reserved (P224): the caller hands `reservation` to
 * dispatch (DispatchOptions.reserved), which commits it when the attempt goes out, and releases
 * it in a `finally` (a no-op once committed): withReservedRoute does both. Without this, every handler routing while the
 * others awaited their writes saw the same free slot: ten jobs submitted at once to a worker
 * with max_parallel_jobs 2 were all sent to it, and eight came back refused `worker_busy`.
 */
export function routeReserving(ctx: RouteContext, job: Pick<JobRecord, 'topic' | 'labels' | 'requires'>, avoid?: string): { route: RouteDecision; reservation: Reservation | undefined } {
  const route = routeFor(ctx, job, avoid);
  return { route, reservation: route.kind === 'worker' ? ctx.workers.reserve(route.worker.workerId) : undefined };
}

/** `fn` on the job's route with its worker's slot reserved (routeReserving), released when `fn` ends unless its dispatch committed it. */
export async function withReservedRoute<T>(ctx: RouteContext, job: Pick<JobRecord, 'topic' | 'labels' | 'requires'>, avoid: string | undefined, fn: (route: RouteDecision, reserved: Reservation | undefined) => Promise<T>): Promise<T> {
  const { route, reservation } = routeReserving(ctx, job, avoid);
  try {
    return await fn(route, reservation);
  } finally {
    reservation?.release();
  }
}
