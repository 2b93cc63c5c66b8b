export {
  createRedis,
  COMMAND_TIMEOUT_WAITS_FOR_PENDING_REPLY,
  SOCKET_TIMEOUT_WAITS_FOR_PENDING_REPLY,
  REDIS_IN_FLIGHT_TEXT,
  closeRedis,
  pingRedis,
  masters,
  evictionPolicies,
  warnIfEvicting,
  retryDelayMs,
  redisLogEvents,
  REPORT_EVERY_MS,
  redisFailureKind,
  throttleFailures,
  type FailureThrottle,
  type RedisClient,
  type RedisConnOptions,
  type RedisConnectionEvents,
} from './client';
export { RedisTlsFilesError, RedisUrlFileError, RedisUrlFileMovedError, type RedisTlsOptions } from './live-files';
export { defineScripts, scriptSpec, type ScriptRunner, type ScriptSpec } from './scripts';
export { KeyBuilder } from './keys';
export { scanKeys } from './scan';
export { execReplies } from './multi';
export {
  RedisError, FENCED, isRedisAuthError, isRedisUnavailable, isSlotMoving, isWrongType, redisCommandNotRun, redisErrorText, REDIS_NOT_SENT_TEXT, scriptCodes, toRedisError, type RedisErrorCode, type ScriptCodes,
} from './errors';
export { clusterNow, clockOffsetMs, startClockSync, CLOCK_STEP_MS, CLOCK_OFFSET_MIN_MS, CLOCK_OFFSET_STEP_MS, CLOCK_SYNC_INTERVAL_MS, FIRST_SYNC_WAIT_MS, type ClockSync, type ClockSyncOptions } from './clock';
