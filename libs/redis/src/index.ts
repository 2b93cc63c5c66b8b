export {
  createRedis,
  closeRedis,
  pingRedis,
  masters,
  evictionPolicies,
  warnIfEvicting,
  retryDelayMs,
  redisLogEvents,
  REPORT_EVERY_MS,
  type RedisClient,
  type RedisConnOptions,
  type RedisConnectionEvents,
} from './client';
export { defineScripts, scriptSpec, type ScriptRunner, type ScriptSpec } from './scripts';
export { KeyBuilder } from './keys';
export { scanKeys } from './scan';
export { execReplies } from './multi';
export { RedisError, FENCED, isRedisUnavailable, isWrongType, scriptCodes, toRedisError, type RedisErrorCode, type ScriptCodes } from './errors';
