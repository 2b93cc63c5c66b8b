import type { Registry } from 'prom-client';
import { createLogger, type Logger } from '@cordum/service-kit';

export interface CapturedLogger {
  logger: Logger;
  lines: { level: string; msg: string; [k: string]: unknown }[];
  count(msg: string): number;
}

/** A real service-kit logger whose JSON lines are kept for assertions instead of printed. */
export function capturingLogger(instance: string): CapturedLogger {
  const lines: CapturedLogger['lines'] = [];
  const logger = createLogger({
    service: 'test',
    instance,
    level: 'debug',
    write: (line) => {
      lines.push(JSON.parse(line) as CapturedLogger['lines'][number]);
      if (process.env['CORDUM_TEST_VERBOSE']) process.stderr.write(line);
    },
  });
  return { logger, lines, count: (msg) => lines.filter((l) => l.msg === msg).length };
}

/** Value of a counter/gauge sample with exactly these labels (0 when absent). */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val) && Object.keys(v.labels).length === Object.keys(labels).length);
  return hit?.value ?? 0;
}

/** Every label set of a metric with value 1 (for cordum_config_applied_info). */
export async function metricLabels(registry: Registry, name: string): Promise<Record<string, string | number>[]> {
  const m = registry.getSingleMetric(name);
  if (!m) return [];
  const { values } = await m.get();
  return values.filter((v) => v.value === 1).map((v) => v.labels as Record<string, string | number>);
}
