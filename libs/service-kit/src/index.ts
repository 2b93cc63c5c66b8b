export { CordumError, ConfigError, isConfigError, errorText } from './errors';
export { createLogThrottle } from './log-throttle';
export {
  loadConfig,
  exitOnConfigError,
  zDuration,
  zJobTtl,
  zDlqTtl,
  zLongDuration,
  zCheckedString,
  zParsedString,
  MAX_TIMER_MS,
  zAddr,
  zBool,
  zCsv,
  zInt,
  zNumber,
  zPositiveInt,
  zNonNegativeInt,
  zUrl,
  zUrlList,
  parseDurationMs,
  parseAddr,
  ANY_HOST,
  listenHost,
  formatAddr,
  commonEnvSchema,
  COMMON_SECRET_FILES,
  natsConnectionConfig,
  redisConnectionConfig,
  defaultInstanceId,
  processEnv,
  redactUrl,
  redactConfig,
  logConfig,
  isSecretKey,
  LOG_LEVELS,
  type LogLevel,
  type Addr,
  type CommonEnv,
  type LoadConfigOptions,
  type NatsConnectionConfig,
  type RedisConnectionConfig,
  type TlsFilesConfig,
  type NatsTlsConfig,
} from './config';
export { createLogger, serializeError, type Logger, type LoggerOptions } from './logger';
export { clockOffsetGauge, createMetricsRegistry, httpMetrics } from './metrics';
export { createExpressServer } from './http-server';
export { startHealthServer, runCheck, sharedCheck, createReadinessLog, NOT_READY_START_GRACE_MS, SHARED_CHECK_MAX_AGE_MS, type HealthServer, type HealthServerOptions, type ReadinessCheck, type ReadinessLog } from './health';
export { valueWithin } from './within';
export { Shutdown, type ShutdownOptions, type ShutdownOutcome } from './shutdown';
export { acceptCommandLine, parseServiceArgs, serviceUsage, processArgs, type ServiceArgs, type CommandLineOptions, type ServiceUsageOptions } from './argv';
export { runService, type Service, type ServiceDeps, type RunServiceOptions } from './service';
export type { Registry } from 'prom-client';
