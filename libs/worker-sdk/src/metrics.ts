import { Counter, Gauge, type Registry } from 'prom-client';

/** Worker metrics on the process registry; reused when a second worker shares it. */
export class WorkerMetrics {
  readonly jobs: Counter<'status'>;
  readonly active: Gauge;

  constructor(registry: Registry) {
    this.jobs =
      (registry.getSingleMetric('cordum_worker_jobs_total') as Counter<'status'> | undefined) ??
      new Counter({ name: 'cordum_worker_jobs_total', help: 'Jobs finished by this worker, by reported status', labelNames: ['status'], registers: [registry] });
    this.active =
      (registry.getSingleMetric('cordum_worker_active_jobs') as Gauge | undefined) ??
      new Gauge({ name: 'cordum_worker_active_jobs', help: 'Jobs currently running on this worker', registers: [registry] });
  }
}
