import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configReloadEnvShape, configReloadIntervalMs, type Policy } from '@cordum/config-overlay';
import { ANY_HOST, ConfigError, commonEnvSchema, defaultInstanceId, loadConfig, natsConnectionConfig, redisConnectionConfig, zAddr, zDuration, zPositiveInt, errorText, type NatsConnectionConfig, type RedisConnectionConfig } from '@cordum/service-kit';
import { z } from 'zod';
import { parsePolicy } from './policy/parse';
import { BUILTIN_DEFAULT_POLICY } from './policy/source';

export const SERVICE_NAME = 'safety-kernel';

const envSchema = commonEnvSchema.extend({
  SAFETY_KERNEL_GRPC_ADDR: zAddr.default({ host: ANY_HOST, port: 50051 }),
  SAFETY_KERNEL_HTTP_ADDR: zAddr.default({ host: ANY_HOST, port: 9095 }),
  SAFETY_POLICY_PATH: z.string().optional(),
  /** 0 (default) turns the decision cache off. */
  SAFETY_DECISION_CACHE_TTL: zDuration.default(0),
  SAFETY_DECISION_CACHE_MAX_SIZE: zPositiveInt.default(10_000),
  ...configReloadEnvShape,
});

export interface SafetyKernelConfig {
  service: typeof SERVICE_NAME;
  instanceId: string;
  logLevel: z.infer<typeof envSchema>['CORDUM_LOG_LEVEL'];
  /** REDIS_URL, REDIS_CLUSTER_ADDRESSES, pool sizes and REDIS_TLS_* (redisConnectionConfig). */
  redis: RedisConnectionConfig;
  /** NATS_URL and the NATS login and TLS variables (natsConnectionConfig). */
  nats: NatsConnectionConfig;
  grpcAddr: { host: string; port: number };
  httpAddr: { host: string; port: number };
  /**
   * Where the policy file lives. `explicit` = the operator set SAFETY_POLICY_PATH,
   * so an unreadable file is fatal; otherwise the copy beside the bundle (D37).
   */
  policy: { path: string; explicit: boolean };
  /** ttlMs 0 = off. Entries are per replica and flushed whenever the snapshot changes. */
  decisionCache: { ttlMs: number; maxSize: number };
  /** Poll for lost `sys.config.changed` notifications (D36, CORDUM_CONFIG_RELOAD_INTERVAL). */
  configReloadIntervalMs: number;
}

/** The policy shipped beside the bundle: dist/apps/safety-kernel/config/safety.yaml (D37). */
export function bundledPolicyPath(): string {
  return join(__dirname, 'config', 'safety.yaml');
}

/** Pure: validates env once (CONTRACT §1); throws ConfigError naming the variable. */
export function loadSafetyKernelConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): SafetyKernelConfig {
  const e = loadConfig(envSchema, env);
  return {
    service: SERVICE_NAME,
    instanceId: e.CORDUM_INSTANCE_ID ?? defaultInstanceId(SERVICE_NAME),
    logLevel: e.CORDUM_LOG_LEVEL,
    redis: redisConnectionConfig(e),
    nats: natsConnectionConfig(e),
    grpcAddr: e.SAFETY_KERNEL_GRPC_ADDR,
    httpAddr: e.SAFETY_KERNEL_HTTP_ADDR,
    policy: e.SAFETY_POLICY_PATH ? { path: e.SAFETY_POLICY_PATH, explicit: true } : { path: bundledPolicyPath(), explicit: false },
    decisionCache: { ttlMs: e.SAFETY_DECISION_CACHE_TTL, maxSize: e.SAFETY_DECISION_CACHE_MAX_SIZE },
    configReloadIntervalMs: configReloadIntervalMs(e),
  };
}

/** Config plus the policy read at start (a file is config: a bad one must stop the service with exit 2). */
export interface SafetyKernelRuntimeConfig extends SafetyKernelConfig {
  initialPolicy: Policy;
  /** 'file' = read from policy.path; 'builtin' = no SAFETY_POLICY_PATH and no bundled copy. */
  policySource: 'file' | 'builtin';
}

/**
 * Reads the policy once, synchronously, as part of config loading. An explicitly
 * set SAFETY_POLICY_PATH that cannot be read or parsed is a ConfigError (exit 2,
 * one line naming the variable, D37). Without the variable, a missing bundled copy
 * falls back to the built-in default (same content as config/safety.yaml).
 */
export function withInitialPolicy(config: SafetyKernelConfig): SafetyKernelRuntimeConfig {
  const { path, explicit } = config.policy;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (!explicit && code === 'ENOENT') return { ...config, initialPolicy: BUILTIN_DEFAULT_POLICY, policySource: 'builtin' };
    const what = typeof code === 'string' ? code : errorText(err);
    throw new ConfigError(`invalid config: SAFETY_POLICY_PATH cannot read ${JSON.stringify(path)}: ${what}`);
  }
  try {
    return { ...config, initialPolicy: parsePolicy(text), policySource: 'file' };
  } catch (err) {
    const what = errorText(err);
    const name = explicit ? 'SAFETY_POLICY_PATH' : 'SAFETY_POLICY_PATH (default bundled copy)';
    throw new ConfigError(`invalid config: ${name} ${JSON.stringify(path)}: ${what}`);
  }
}
