import type { JobRecord } from '@cordum/job-store';
import type { SchedulerContext } from './context';
import { route, type RouteDecision } from './routing';

/**
 * `avoid`: a worker that just failed to acknowledge a dispatch (BEHAVIOURS §3
 * fallback); skipped while any other candidate exists.
 */
export function routeFor(ctx: SchedulerContext, job: JobRecord, avoid?: string): RouteDecision {
  const live = ctx.workers.live();
  const others = avoid ? live.filter((w) => w.workerId !== avoid) : live;
  const first = route({ topic: job.topic, labels: job.labels, requires: job.requires, workers: others, pools: ctx.pools(), dispatchUntracked: ctx.config.dispatchUntracked });
  if (!avoid || first.kind === 'worker' || others.length === live.length) return first;
  return route({
    topic: job.topic,
    labels: job.labels,
    requires: job.requires,
    workers: live,
    pools: ctx.pools(),
    dispatchUntracked: ctx.config.dispatchUntracked,
  });
}
