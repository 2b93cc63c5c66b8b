import { z } from 'zod';
import { zDuration } from '@cordum/service-kit';

export const DEFAULT_CONFIG_RELOAD_INTERVAL_MS = 30_000;

const positiveDuration = zDuration.refine((ms) => ms > 0, { message: 'must be a positive duration like 500ms, 30s or 5m' });

/**
 * Env fragment for the config watcher's poll interval (D36). Merge it into an app schema:
 * `commonEnvSchema.extend(configReloadEnvShape)`, then `configReloadIntervalMs(env)`.
 * `CORDUM_CONFIG_RELOAD_INTERVAL` wins; `SCHEDULER_CONFIG_RELOAD_INTERVAL` is the seed-named alias.
 */
export const configReloadEnvShape = {
  CORDUM_CONFIG_RELOAD_INTERVAL: positiveDuration.optional(),
  SCHEDULER_CONFIG_RELOAD_INTERVAL: positiveDuration.optional(),
};

export const configReloadEnvSchema = z.object(configReloadEnvShape);
export type ConfigReloadEnv = z.infer<typeof configReloadEnvSchema>;

export function configReloadIntervalMs(env: Partial<ConfigReloadEnv>): number {
  return env.CORDUM_CONFIG_RELOAD_INTERVAL ?? env.SCHEDULER_CONFIG_RELOAD_INTERVAL ?? DEFAULT_CONFIG_RELOAD_INTERVAL_MS;
}
