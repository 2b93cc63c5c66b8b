export { SCOPES, DEFAULT_SCOPE, DEFAULT_SCOPE_ID, configKeys, safetyConfigKeys, type Scope, type ConfigKeys, type SafetyConfigKeys } from './keys';
export {
  ConfigOverlayError,
  RevisionConflictError,
  ConfigValidationError,
  isRevisionConflict,
  type ConfigOverlayErrorCode,
  type ConfigFieldError,
} from './errors';
export { canonicalJson, sha256Hex, hashValue, sectionHash, sectionHashes, findNotJson, NotJsonError, MAX_CONFIG_DEPTH } from './canonical';
export { applyMergePatch, mergeEffective, isPlainObject, type JsonObject } from './merge';
export {
  sectionSchemas,
  poolsSectionSchema,
  timeoutsSectionSchema,
  schedulerSectionSchema,
  rateLimitsSectionSchema,
  safetySectionSchema,
  TIMEOUT_DEFAULTS,
  validateConfig,
  distinctErrors,
  unknownConfigKeys,
  sectionFileErrors,
  MIN_SCAN_INTERVAL_SECONDS,
  RATE_LIMIT_BOUNDS,
  clampRateLimits,
  MAX_SCAN_INTERVAL_SECONDS,
  parseSection,
  resolveTimeouts,
  isKnownSection,
  type KnownSection,
  type PoolsSection,
  type TimeoutsSection,
  type SchedulerSection,
  type RateLimitsSection,
  type SafetySection,
} from './schema';
export {
  createConfigStore,
  type ConfigStore,
  type ConfigStoreOptions,
  type ConfigDocument,
  type WriteOptions,
  type WriteResult,
  type UpdateStep,
} from './store';
export {
  mergeBootstrapFile,
  mergeBootstrapFiles,
  type BootstrapFile,
  type BootstrapFileOptions,
  type BootstrapResult,
  type BootstrapFilesResult,
} from './bootstrap';
export { CLOCK_SLACK_MS } from './clock-slack';
export { publishConfigChanged, decodeConfigChanged, CONFIG_CHANGED_CODE, CONFIG_NOTIFY_FLUSH_BUDGET_MS, type ConfigChange } from './notify';
export { configMetrics, ABSENT_HASH_LABEL, type ConfigMetrics, type ReloadTrigger } from './metrics';
export { createConfigWatcher, type ConfigWatcher, type ConfigWatcherOptions, type SectionSetter } from './watcher';
export {
  configStatus,
  CORRUPT_SECTION_PREFIX,
  writeAppliedReport,
  REPORT_INDEX_SLACK_MS,
  appliedReportSchema,
  type AppliedReport,
  type ConfigStatus,
  type ReplicaStatus,
  type ReplicaSyncStatus,
} from './status';
export {
  configReloadEnvShape,
  configReloadEnvSchema,
  configReloadIntervalMs,
  DEFAULT_CONFIG_RELOAD_INTERVAL_MS,
  type ConfigReloadEnv,
} from './env';
export { PolicyLoadError } from './policy/errors';
export { topicMatches } from './policy/glob';
export {
  type PolicyMatch,
  type PolicyConstraintsSpec,
  type VelocitySpec,
  type PolicyRule,
  type Policy,
  type PolicySnapshot,
  MAX_RULE_ID_CHARS,
} from './policy/model';
export { validatePolicy } from './policy/validate';
export { parseSafetySection, composePolicy, type PolicyBundle } from './policy/bundles';
export { publishFileRules, removeFileRules, liveFileRules, fileRuleClashes, type FileRules } from './policy/file-rules';
export { parseYamlStrict } from './yaml';
