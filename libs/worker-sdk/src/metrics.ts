import { Counter, Gauge, type Registry } from 'prom-client';

/** Worker metrics on the process registry; reused when a second worker shares it. */
export class WorkerMetrics {
  readonly jobs: Counter<'status'>;
  readonly active: Gauge;
  readonly stuck: Counter;

  constructor(registry: Registry) {
    this.jobs =
      (registry.getSingleMetric('cordum_worker_jobs_total') as Counter<'status'> | undefined) ??
      new Counter({ name: 'cordum_worker_jobs_total', help: 'JobResults this worker sent, by status: handler outcomes and its own answers (worker_busy, worker_shutdown, worker_redis_unavailable)', labelNames: ['status'], registers: [registry] });
    this.active =
      (registry.getSingleMetric('cordum_worker_active_jobs') as Gauge | undefined) ??
      new Gauge({ name: 'cordum_worker_active_jobs', help: 'Jobs currently running on this worker', registers: [registry] });
    this.stuck =
      (registry.getSingleMetric('cordum_worker_stuck_handlers_total') as Counter | undefined) ??
      new Counter({ name: 'cordum_worker_stuck_handlers_total', help: 'Handlers still running cancelGraceMs after their job was cancelled or abandoned at stop; their slot was taken back', registers: [registry] });
  }
}
