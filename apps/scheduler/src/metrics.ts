import { Counter, Histogram, type Registry } from 'prom-client';

export const LOCK_WAIT_HISTOGRAM = 'cordum_scheduler_job_lock_wait_seconds';

export interface SchedulerMetrics {
  jobsTotal: Counter<'state'>;
  dispatchLatency: Histogram;
  ignored: Counter<'kind' | 'reason'>;
  decodeErrors: Counter<'subject'>;
}

export function createSchedulerMetrics(registry: Registry): SchedulerMetrics {
  return {
    jobsTotal: new Counter({ name: 'cordum_jobs_total', help: 'Committed job transitions by target state.', labelNames: ['state'], registers: [registry] }),
    dispatchLatency: new Histogram({
      name: 'cordum_scheduler_dispatch_latency_seconds',
      help: 'Submit (job created) to dispatch published.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    ignored: new Counter({
      name: 'cordum_scheduler_ignored_packets_total',
      help: 'Packets the scheduler acked without effect (stale dispatch, terminal job, unknown job, unmapped status).',
      labelNames: ['kind', 'reason'],
      registers: [registry],
    }),
    decodeErrors: new Counter({ name: 'cordum_scheduler_decode_errors_total', help: 'Undecodable packets by subject.', labelNames: ['subject'], registers: [registry] }),
  };
}
