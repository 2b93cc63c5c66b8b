import { Counter, Gauge, type Registry } from 'prom-client';

/** `retry`: a reload before the first successful load, on a 1 s, 2 s, 4 s … backoff capped at the poll interval. */
export type ReloadTrigger = 'notification' | 'poll' | 'startup' | 'retry';

export interface ConfigMetrics {
  reloads: Counter<'trigger'>;
  applies: Counter<'section'>;
  appliedInfo: Gauge<'section' | 'hash'>;
}

/** Label value for a section applied as "absent" (its hash is null). */
export const ABSENT_HASH_LABEL = 'absent';

function getOrCreate<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** CONTRACT §7 config metrics; reused when already registered (one Registry per process). */
export function configMetrics(registry: Registry): ConfigMetrics {
  return {
    reloads: getOrCreate(registry, 'cordum_config_reloads_total', () => new Counter({
      name: 'cordum_config_reloads_total',
      help: 'Config reload attempts by trigger',
      labelNames: ['trigger'],
      registers: [registry],
    })),
    applies: getOrCreate(registry, 'cordum_config_applies_total', () => new Counter({
      name: 'cordum_config_applies_total',
      help: 'Config sections actually applied (hash changed and setter succeeded)',
      labelNames: ['section'],
      registers: [registry],
    })),
    appliedInfo: getOrCreate(registry, 'cordum_config_applied_info', () => new Gauge({
      name: 'cordum_config_applied_info',
      help: ' 1 for the applied hash of each section (SHA-256 of canonical JSON)',
      labelNames: ['section', 'hash'],
      registers: [registry],
    })),
  };
}
