import { join } from 'node:path';
import { commonEnvSchema, loadConfig, zAddr, zBool, zDuration } from '@cordum/service-kit';
import { z } from 'zod';
import { DEFAULT_TIMEOUTS, EMPTY_POOLS, loadYamlFile, poolsSchema, timeoutsSchema, type PoolsConfig, type TimeoutsConfig } from './routing-config';

const DAY_MS = 24 * 3600 * 1000;

export const schedulerEnvSchema = commonEnvSchema.extend({
  SCHEDULER_HTTP_ADDR: zAddr.prefault(':9090'),
  SAFETY_KERNEL_ADDR: z.string().min(1).default('127.0.0.1:50051'),
  POOL_CONFIG_PATH: z.string().optional(),
  TIMEOUT_CONFIG_PATH: z.string().optional(),
  JOB_TTL: zDuration.default(7 * DAY_MS).refine((ms) => ms >= 60_000 && ms <= 30 * DAY_MS, { message: 'must be between 1m and 30d' }),
  SCHEDULER_DISPATCH_UNTRACKED: zBool.default(false),
});

export interface SchedulerConfig {
  redis: { url: string; clusterAddresses: string[]; poolSize: number; minIdleConns: number };
  natsServers: string[];
  httpAddr: { host: string; port: number };
  safetyKernelAddr: string;
  jobTtlMs: number;
  dispatchUntracked: boolean;
  pools: PoolsConfig;
  poolsSource: string;
  timeouts: TimeoutsConfig;
  timeoutsSource: string;
  /** D13 default attempt limit (overridden per job by constraints.max_retries). */
  maxAttempts: number;
  /** Per-job lock TTL (CONTRACT §5). */
  jobLockTtlMs: number;
  /** D6: how long a handler waits for a busy job lock before NAKing. */
  lockWaitMs: number;
  /** D21 Check deadline. */
  safetyDeadlineMs: number;
  workerTtlMs: number;
}

/**
 * Pure: env in, validated config out (main.ts passes process.env). `bundleDir`
 * is where the bundled `config/` copies live (D37): beside dist/apps/scheduler/main.js.
 */
export function loadSchedulerConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>, bundleDir: string = __dirname): SchedulerConfig {
  const e = loadConfig(schedulerEnvSchema, env);
  const poolsPath = e.POOL_CONFIG_PATH ?? join(bundleDir, 'config', 'pools.yaml');
  const timeoutsPath = e.TIMEOUT_CONFIG_PATH ?? join(bundleDir, 'config', 'timeouts.yaml');
  const pools = loadYamlFile('POOL_CONFIG_PATH', poolsPath, e.POOL_CONFIG_PATH !== undefined, poolsSchema, EMPTY_POOLS);
  const timeouts = loadYamlFile('TIMEOUT_CONFIG_PATH', timeoutsPath, e.TIMEOUT_CONFIG_PATH !== undefined, timeoutsSchema, DEFAULT_TIMEOUTS);
  return {
    redis: { url: e.REDIS_URL, clusterAddresses: e.REDIS_CLUSTER_ADDRESSES, poolSize: e.REDIS_POOL_SIZE, minIdleConns: e.REDIS_MIN_IDLE_CONNS },
    natsServers: e.NATS_URL,
    httpAddr: e.SCHEDULER_HTTP_ADDR,
    safetyKernelAddr: e.SAFETY_KERNEL_ADDR,
    jobTtlMs: e.JOB_TTL,
    dispatchUntracked: e.SCHEDULER_DISPATCH_UNTRACKED,
    pools: pools.value,
    poolsSource: pools.source,
    timeouts: timeouts.value,
    timeoutsSource: timeouts.source,
    maxAttempts: 3,
    jobLockTtlMs: 30_000,
    lockWaitMs: 50,
    safetyDeadlineMs: 2_000,
    workerTtlMs: 30_000,
  };
}
