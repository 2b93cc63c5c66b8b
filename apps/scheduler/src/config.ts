import { createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { configReloadEnvShape, configReloadIntervalMs, type BootstrapFile } from '@cordum/config-overlay';
import { ConfigError, commonEnvSchema, loadConfig, natsConnectionConfig, redisConnectionConfig, zAddr, zBool, zCheckedString, zDuration, zInt, zJobTtl, zDlqTtl, zLongDuration, zParsedString, type NatsConnectionConfig, type RedisConnectionConfig } from '@cordum/service-kit';
import { loadSigningKeyFile, loadVerifyKeysFile, parseGrpcAddress } from '@cordum/protocol';
import { z } from 'zod';
import { D21_BREAKER, type BreakerOptions } from './safety-breaker';
import type { FailModes } from './safety';
import { DEFAULT_TIMEOUTS, EMPTY_POOLS, loadSectionFile, poolsFromSection, timeoutsFromSection, type PoolsConfig, type TimeoutsConfig } from './routing-config';

const DAY_MS = 24 * 3600 * 1000;
const BUILT_IN = 'built-in defaults';

export const schedulerEnvSchema = commonEnvSchema.extend({
  SCHEDULER_HTTP_ADDR: zAddr.prefault(':9090'),
  SAFETY_KERNEL_ADDR: zCheckedString(parseGrpcAddress).default('127.0.0.1:50051'),
  POOL_CONFIG_PATH: z.string().optional(),
  TIMEOUT_CONFIG_PATH: z.string().optional(),
  JOB_TTL: zJobTtl,
  // P238: a dead letter's life (default 30 d, D45); the same on every gateway and scheduler.
  DLQ_TTL: zDlqTtl,
  // P99: a job held for approval this long is DENIED `approval_expired` (default 6/7 of JOB_TTL: 6d at 7d).
  // Compared with a held job's age, never a timer: bounded by JOB_TTL (approvalTimeout), not Node's timer range (P193).
  SCHEDULER_APPROVAL_TIMEOUT: zLongDuration.optional(),
  SCHEDULER_DISPATCH_UNTRACKED: zBool.default(false),
  // BEHAVIOURS §3 delivery verification.
  SCHEDULER_DISPATCH_VERIFY_ENABLED: zBool.default(true),
  SCHEDULER_DISPATCH_VERIFY_DELAY: zDuration.default(10_000).refine(between(1_000, 60_000), { message: 'must be between 1s and 60s' }),
  // BEHAVIOURS §4 warm start.
  // P288: readers count a worker online while its snapshot heartbeat is under 30 s old, and a
  // heartbeat is up to 10 s old when written: a longer period showed live workers offline between
  // writes; a longer lease left a crashed writer's snapshot ageing past that window.
  WORKER_SNAPSHOT_INTERVAL: zDuration.default(5_000).refine(between(100, 15_000), { message: 'must be between 100ms and 15s: gateways count a worker online while its snapshot heartbeat is under 30s old' }),
  WORKER_SNAPSHOT_LOCK_TTL: zDuration.default(30_000).refine(between(1_000, 30_000), { message: 'must be between 1s and 30s: a crashed writer is replaced after it, and its snapshot ages meanwhile' }),
  // Pending replayer (D13): poll period of job:retry, age after which a PENDING/SCHEDULED job counts as lost.
  SCHEDULER_REPLAY_INTERVAL: zDuration.default(1_000).refine(between(50, 60_000), { message: 'must be between 50ms and 60s' }),
  SCHEDULER_PENDING_REPLAY_AGE: zDuration.default(30_000).refine(between(500, 3_600_000), { message: 'must be between 500ms and 1h' }),
  SCHEDULER_SCHEDULE_MAX_TRIES: zInt({ min: 1, max: 10_000 }).default(50),
  // Default 10 min; bounded by JOB_TTL as well (scheduleMaxWait).
  SCHEDULER_SCHEDULE_MAX_WAIT: zDuration.refine(between(1_000, 7 * DAY_MS), { message: 'must be between 1s and 7d' }).optional(),
  // Per-job lock TTL (CONTRACT §5: 30 s); shorter only to make fencing tests fast.
  SCHEDULER_JOB_LOCK_TTL: zDuration.default(30_000).refine(between(3_000, 300_000), { message: 'must be between 3s and 5m' }),
  // D36: CORDUM_CONFIG_RELOAD_INTERVAL (alias SCHEDULER_CONFIG_RELOAD_INTERVAL), default 30 s.
  ...configReloadEnvShape,
  // Defaults of the `scheduler` config section (CONTRACT §6); the section overrides them live.
  SCHEDULER_INPUT_FAIL_MODE: z.enum(['open', 'closed']).default('closed'),
  SCHEDULER_OUTPUT_FAIL_MODE: z.enum(['open', 'closed']).default('closed'),
  SCHEDULER_OUTPUT_POLICY_ENABLED: zBool.default(false),
  // CONTRACT §3, P61: a PEM P-256 public key; when set, packets from workers must be signed with its key.
  CAP_VERIFY_KEY_FILE: zParsedString(loadVerifyKeysFile).optional(),
  // P61: a PEM P-256 private key; when set, the job requests sent to workers are signed with it.
  CAP_SIGNING_KEY_FILE: zParsedString((path) => loadSigningKeyFile(path, 'private')).optional(),
});

/** How long before its record expires a hold must time out: one approval pass (≤ 1 min) and a margin. */
const APPROVAL_MARGIN_MS = 2 * 60_000;

/**
 * P99: a held job must end (DENIED `approval_expired`, with its DLQ entry) before its record
 * expires with the job TTL (renewed at each hold), which left it ended in no state at all; so
 * the timeout stays at least APPROVAL_MARGIN_MS below JOB_TTL (half of it for a TTL under 4 min),
 * by default 6/7 of JOB_TTL (6 days at 7).
 */
/** The longest a job may wait (held, P99; for a worker, P234) and still end before its record expires: JOB_TTL minus APPROVAL_MARGIN_MS, or half of it. */
function belowJobTtl(jobTtlMs: number): number {
  return Math.max(Math.floor(jobTtlMs / 2), jobTtlMs - APPROVAL_MARGIN_MS);
}

function approvalTimeout(set: number | undefined, jobTtlMs: number): number {
  const max = belowJobTtl(jobTtlMs);
  if (set === undefined) return Math.min(Math.floor((jobTtlMs * 6) / 7), max);
  if (set < 1_000 || set > max) {
    throw new ConfigError(`invalid config: SCHEDULER_APPROVAL_TIMEOUT must be between 1s and JOB_TTL minus 2m (${max} ms), so a held job ends before its record expires (got ${set} ms)`);
  }
  return set;
}

/** D13's default bound of a wait for a worker. */
const SCHEDULE_MAX_WAIT_MS = 600_000;

/**
 * P234: a job waiting for a worker must fail `no_workers` (with its DLQ entry) before its record
 * expires: its last look renews the record for JOB_TTL, and the bound comes at most a backoff step
 * (≤ 30 s) and a replayer turn after the wait's limit. With JOB_TTL at or below the wait, a parked
 * job's record expired first and the job vanished (404, no DLQ entry, no state event). So the
 * wait stays below JOB_TTL by the approval timeout's margin; unset, it is 10 min or that bound.
 */
function scheduleMaxWait(set: number | undefined, jobTtlMs: number): number {
  const max = belowJobTtl(jobTtlMs);
  if (set === undefined) return Math.min(SCHEDULE_MAX_WAIT_MS, max);
  if (set > max) {
    throw new ConfigError(`invalid config: SCHEDULER_SCHEDULE_MAX_WAIT must be at most JOB_TTL minus 2m (${max} ms), so a job waiting for a worker fails no_workers before its record expires (got ${set} ms)`);
  }
  return set;
}

function between(min: number, max: number) {
  return (ms: number): boolean => ms >= min && ms <= max;
}

export interface SchedulerConfig {
  /** REDIS_URL, REDIS_CLUSTER_ADDRESSES, pool sizes and REDIS_TLS_* (redisConnectionConfig). */
  redis: RedisConnectionConfig;
  /** NATS_URL and the NATS login and TLS variables (natsConnectionConfig). */
  nats: NatsConnectionConfig;
  httpAddr: { host: string; port: number };
  safetyKernelAddr: string;
  jobTtlMs: number;
  /** DLQ_TTL (P238). */
  dlqTtlMs: number;
  /** P99: held jobs older than this (since they were held) are DENIED `approval_expired`; at least 1 s (approvalTimeout). */
  approvalTimeoutMs: number;
  dispatchUntracked: boolean;
  /** Routing until the first config load (the pools file, else built-in defaults). */
  pools: PoolsConfig;
  poolsSource: string;
  /** Reconciler timeouts until the first config load (the timeouts file, else defaults). */
  timeouts: TimeoutsConfig;
  timeoutsSource: string;
  /** D35: files merged into cfg:system:default at start (only those that were found). */
  bootstrapFiles: BootstrapFile[];
  /** D36 poll interval of the config watcher. */
  configReloadIntervalMs: number;
  /** D13 default attempt limit (overridden per job by constraints.max_retries). */
  maxAttempts: number;
  /** Per-job lock TTL (CONTRACT §5). */
  jobLockTtlMs: number;
  /** D6: how long a handler waits for a busy job lock before NAKing. */
  lockWaitMs: number;
  /** D21 Check deadline. */
  safetyDeadlineMs: number;
  /** D21 shared circuit breaker around Check. */
  safetyBreaker: BreakerOptions;
  /** `scheduler` section defaults (env); D19: input_fail_mode defaults to closed. */
  failModes: FailModes;
  workerTtlMs: number;
  verify: { enabled: boolean; delayMs: number };
  snapshot: { intervalMs: number; lockTtlMs: number; readTimeoutMs: number; hydrateFloorMs: number };
  replay: { intervalMs: number; pendingAgeMs: number; maxScheduleTries: number; maxScheduleWaitMs: number };
  /** D7 leader leases (reconciler, replayer). */
  leader: { ttlMs: number; renewMs: number };
  /** P61: packets from workers (results, progress, heartbeats, handshakes) must verify with one of these keys (several during a rotation, P201). */
  capVerifyKey?: readonly KeyObject[];
  /** P61: job requests to workers are signed with this key (for workers that verify). */
  capSigningKey?: KeyObject;
}

/**
 * Pure: env in, validated config out (main.ts passes process.env). `bundleDir`
 * is where the bundled `config/` copies live (D37): beside dist/apps/scheduler/main.js.
 */
/**
 * P196: a scheduler that verifies also consumes `sys.job.cancel`, where its own JobCancels go
 * (reconciler timeouts, cancels it re-sends): unsigned, or signed with another pair's key, each
 * was refused by every replica and counted as a forged cancel. So verifying needs the private key
 * of the same pair.
 */
function capKeys(verify: readonly KeyObject[] | undefined, signing: KeyObject | undefined): void {
  if (verify === undefined) return;
  if (signing === undefined) {
    throw new ConfigError('invalid config: CAP_VERIFY_KEY_FILE needs CAP_SIGNING_KEY_FILE too (the private key of the same pair): the scheduler verifies sys.job.cancel, where its own JobCancels go');
  }
  const der = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
  const own = der(createPublicKey(signing));
  if (!verify.some((k) => der(k).equals(own))) {
    throw new ConfigError('invalid config: CAP_SIGNING_KEY_FILE is not the private key of a key in CAP_VERIFY_KEY_FILE: the scheduler verifies its own JobCancels on sys.job.cancel');
  }
}

export function loadSchedulerConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>, bundleDir: string = __dirname): SchedulerConfig {
  const e = loadConfig(schedulerEnvSchema, env);
  capKeys(e.CAP_VERIFY_KEY_FILE, e.CAP_SIGNING_KEY_FILE);
  const poolsPath = e.POOL_CONFIG_PATH ?? join(bundleDir, 'config', 'pools.yaml');
  const timeoutsPath = e.TIMEOUT_CONFIG_PATH ?? join(bundleDir, 'config', 'timeouts.yaml');
  const pools = loadSectionFile('POOL_CONFIG_PATH', 'pools', poolsPath, e.POOL_CONFIG_PATH !== undefined, poolsFromSection);
  const timeouts = loadSectionFile('TIMEOUT_CONFIG_PATH', 'timeouts', timeoutsPath, e.TIMEOUT_CONFIG_PATH !== undefined, timeoutsFromSection);
  const bootstrapFiles: BootstrapFile[] = [];
  if (pools) bootstrapFiles.push({ section: 'pools', fileHashMetaKey: '_poolsFileHash', content: pools.raw, source: pools.source });
  if (timeouts) bootstrapFiles.push({ section: 'timeouts', fileHashMetaKey: '_timeoutsFileHash', content: timeouts.raw, source: timeouts.source });
  return {
    redis: redisConnectionConfig(e),
    nats: natsConnectionConfig(e),
    httpAddr: e.SCHEDULER_HTTP_ADDR,
    safetyKernelAddr: e.SAFETY_KERNEL_ADDR,
    jobTtlMs: e.JOB_TTL,
    dlqTtlMs: e.DLQ_TTL,
    approvalTimeoutMs: approvalTimeout(e.SCHEDULER_APPROVAL_TIMEOUT, e.JOB_TTL),
    dispatchUntracked: e.SCHEDULER_DISPATCH_UNTRACKED,
    pools: pools?.value ?? EMPTY_POOLS,
    poolsSource: pools?.source ?? BUILT_IN,
    timeouts: timeouts?.value ?? DEFAULT_TIMEOUTS,
    timeoutsSource: timeouts?.source ?? BUILT_IN,
    bootstrapFiles,
    configReloadIntervalMs: configReloadIntervalMs(e),
    maxAttempts: 3,
    jobLockTtlMs: e.SCHEDULER_JOB_LOCK_TTL,
    lockWaitMs: 50,
    safetyDeadlineMs: 2_000,
    safetyBreaker: D21_BREAKER,
    failModes: { inputFailMode: e.SCHEDULER_INPUT_FAIL_MODE, outputFailMode: e.SCHEDULER_OUTPUT_FAIL_MODE, outputPolicyEnabled: e.SCHEDULER_OUTPUT_POLICY_ENABLED },
    workerTtlMs: 30_000,
    verify: { enabled: e.SCHEDULER_DISPATCH_VERIFY_ENABLED, delayMs: e.SCHEDULER_DISPATCH_VERIFY_DELAY },
    // D41: read with a 5 s timeout; hydrated lastSeen = max(last_heartbeat, now − 20 s).
    snapshot: { intervalMs: e.WORKER_SNAPSHOT_INTERVAL, lockTtlMs: e.WORKER_SNAPSHOT_LOCK_TTL, readTimeoutMs: 5_000, hydrateFloorMs: 20_000 },
    replay: {
      intervalMs: e.SCHEDULER_REPLAY_INTERVAL,
      pendingAgeMs: e.SCHEDULER_PENDING_REPLAY_AGE,
      maxScheduleTries: e.SCHEDULER_SCHEDULE_MAX_TRIES,
      maxScheduleWaitMs: scheduleMaxWait(e.SCHEDULER_SCHEDULE_MAX_WAIT, e.JOB_TTL),
    },
    leader: { ttlMs: 15_000, renewMs: 5_000 },
    capVerifyKey: e.CAP_VERIFY_KEY_FILE,
    capSigningKey: e.CAP_SIGNING_KEY_FILE,
  };
}
