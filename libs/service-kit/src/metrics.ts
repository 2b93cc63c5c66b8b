import { type NextFunction, type Request, type Response } from 'express';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per process; every metric carries service and pod (= instance id). */
export function createMetricsRegistry(opts: { service: string; pod: string }): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service: opts.service, pod: opts.pod });
  collectDefaultMetrics({ register: registry });
  return registry;
}

interface HttpMetrics {
  requests: Counter<'method' | 'route' | 'status'>;
  duration: Histogram<'method' | 'route' | 'status'>;
}

// Memoised per registry: a second httpMetrics(registry) call (two express apps in
// one process, e.g. the gateway's API and metrics ports) must not re-register.
const perRegistry = new WeakMap<Registry, HttpMetrics>();

function metricsFor(registry: Registry): HttpMetrics {
  let m = perRegistry.get(registry);
  if (!m) {
    m = {
      requests: new Counter({ name: 'cordum_http_requests_total', help: 'HTTP requests by route template', labelNames: ['method', 'route', 'status'], registers: [registry] }),
      duration: new Histogram({
        name: 'cordum_http_request_duration_seconds',
        help: 'HTTP request duration by route template',
        labelNames: ['method', 'route', 'status'],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers: [registry],
      }),
    };
    perRegistry.set(registry, m);
  }
  return m;
}

/**
 * Express middleware counting requests per route *template* (`/api/v1/jobs/:id`),
 * never the raw path: raw ids would explode label cardinality. Unmatched paths
 * are labelled `unmatched`. Mount it before the routes.
 */
export function httpMetrics(registry: Registry): (req: Request, res: Response, next: NextFunction) => void {
  const m = metricsFor(registry);
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    res.once('finish', () => {
      const routePath = (req.route as { path?: unknown } | undefined)?.path;
      const route = typeof routePath === 'string' ? `${req.baseUrl}${routePath}` : 'unmatched';
      const labels = { method: req.method, route, status: String(res.statusCode) };
      m.requests.inc(labels);
      m.duration.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
    });
    next();
  };
}

const clockGauges = new WeakMap<Registry, Gauge>();

/**
 * `cordum_clock_offset_seconds` (P241): how far Redis's clock is ahead of this host's, as last
 * measured (negative: behind). Returns the callback startClockSync's `onMeasure` takes. One
 * gauge per registry: a service started again on the same registry reuses it.
 */
export function clockOffsetGauge(registry: Registry): (measuredMs: number) => void {
  let g = clockGauges.get(registry);
  if (!g) {
    g = new Gauge({
      name: 'cordum_clock_offset_seconds',
      help: "Redis's clock minus this host's, as last measured (seconds); shared timestamps are taken in Redis's time once it is 0.25 s or more (P241)",
      registers: [registry],
    });
    clockGauges.set(registry, g);
  }
  const gauge = g;
  return (measuredMs) => gauge.set(measuredMs / 1000);
}
