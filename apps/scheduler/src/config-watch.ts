// Live config (BEHAVIOURS §5, D33, D35, D36): at start the pools/timeouts files
// are merged into cfg:system:default (only when a file changed since its last
// merge), then the shared watcher re-reads the document on `sys.config.changed`
// and every poll interval and applies a section through its one setter only
// when the section's hash changed. Same watcher as the gateway (rate_limits) and
// the safety kernel (safety).
import type { Bus } from '@cordum/bus';
import { createConfigStore, createConfigWatcher, parseSection, type ConfigWatcher, type SectionSetter } from '@cordum/config-overlay';
import type { RedisClient } from '@cordum/redis';
import type { ServiceDeps } from '@cordum/service-kit';
import type { SchedulerConfig } from './config';
import { poolsFromSection, timeoutsFromSection, type PoolsConfig, type TimeoutsConfig } from './routing-config';
import type { FailModes } from './safety';

export const SCHEDULER_SERVICE = 'scheduler';

export interface SchedulerSetters {
  /** The routing setter (`pools`). */
  setPools(p: PoolsConfig): void;
  /** Reconciler timeouts (`timeouts`): dispatch, running and scan interval, live. */
  setTimeouts(t: TimeoutsConfig): void;
  /** Safety fail modes (`scheduler`): input/output fail mode, output policy. */
  setFailModes(m: FailModes): void;
  /** Fail modes from env (SCHEDULER_INPUT_FAIL_MODE, ...): what an absent field of the section means. */
  failModeDefaults: FailModes;
}

/** `scheduler` section → fail modes; absent fields keep the env defaults. */
export function failModesFromSection(value: unknown, defaults: FailModes): FailModes {
  const s = parseSection('scheduler', value);
  return {
    inputFailMode: s?.input_fail_mode ?? defaults.inputFailMode,
    outputFailMode: s?.output_fail_mode ?? defaults.outputFailMode,
    outputPolicyEnabled: s?.output_policy_enabled ?? defaults.outputPolicyEnabled,
  };
}

/**
 * The sections the scheduler consumes and reports (D33). A stored section that does not parse
 * throws here: the watcher keeps the previous hash (last good config stays applied), the replica
 * shows DRIFTED, and the error is logged once per bad hash.
 */
export function schedulerSections(s: SchedulerSetters): Record<string, SectionSetter> {
  return {
    pools: (value) => s.setPools(poolsFromSection(parseSection('pools', value))),
    timeouts: (value) => s.setTimeouts(timeoutsFromSection(parseSection('timeouts', value))),
    scheduler: (value) => s.setFailModes(failModesFromSection(value, s.failModeDefaults)),
  };
}

export function createSchedulerConfigWatcher(o: {
  config: SchedulerConfig;
  redis: RedisClient;
  bus: Bus;
  deps: Pick<ServiceDeps, 'logger' | 'instanceId' | 'registry'>;
  sections: Record<string, SectionSetter>;
}): ConfigWatcher {
  return createConfigWatcher({
    store: createConfigStore(o.redis),
    bus: o.bus,
    logger: o.deps.logger,
    registry: o.deps.registry,
    service: SCHEDULER_SERVICE,
    instanceId: o.deps.instanceId,
    pollIntervalMs: o.config.configReloadIntervalMs,
    sections: o.sections,
    bootstrap: o.config.bootstrapFiles,
  });
}
