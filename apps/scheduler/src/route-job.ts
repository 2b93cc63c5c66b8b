import type { JobRecord } from '@cordum/job-store';
import type { SchedulerContext } from './context';
import { route, type RouteDecision } from './routing';

export function routeFor(ctx: SchedulerContext, job: JobRecord): RouteDecision {
  return route({
    topic: job.topic,
    labels: job.labels,
    requires: job.requires,
    workers: ctx.workers.live(),
    pools: ctx.pools(),
    dispatchUntracked: ctx.config.dispatchUntracked,
  });
}
