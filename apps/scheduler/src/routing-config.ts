// pools.yaml / timeouts.yaml (CONTRACT §6). Parsed with zod; a file that does
// not parse fails closed at start (ConfigError, one line) rather than routing
// with a half-understood table.
import { readFileSync } from 'node:fs';
import { ConfigError } from '@cordum/service-kit';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

export const poolsSchema = z.object({
  topics: z.record(z.string(), z.array(z.string())).default({}),
  pools: z.record(z.string(), z.object({ requires: z.array(z.string()).default([]) })).default({}),
});
export type PoolsConfig = z.infer<typeof poolsSchema>;

export const timeoutsSchema = z.object({
  reconciler: z
    .object({
      dispatch_timeout_seconds: z.number().positive().default(120),
      running_timeout_seconds: z.number().positive().default(300),
      scan_interval_seconds: z.number().positive().default(30),
    })
    .prefault({}),
});
export type TimeoutsConfig = z.infer<typeof timeoutsSchema>;

export const EMPTY_POOLS: PoolsConfig = { topics: {}, pools: {} };
export const DEFAULT_TIMEOUTS: TimeoutsConfig = timeoutsSchema.parse({});

/**
 * D37: an explicitly set path that cannot be read stops the service; a missing
 * default copy (e.g. running from source) falls back to the built-in defaults.
 */
export function loadYamlFile<T>(what: string, path: string, explicit: boolean, schema: z.ZodType<T>, fallback: T): { value: T; source: string } {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    if (!explicit) return { value: fallback, source: 'built-in defaults' };
    throw new ConfigError(`invalid config: ${what} cannot read ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(raw) ?? {};
  } catch (err) {
    throw new ConfigError(`invalid config: ${what} ${path} is not YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  const res = schema.safeParse(doc);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new ConfigError(`invalid config: ${what} ${path}: ${issue ? `${issue.path.join('.')} ${issue.message}` : 'invalid'}`);
  }
  return { value: res.data, source: path };
}
