// echo-worker env (CONTRACT §1, D39): validated once, here, and passed down.
import type { KeyObject } from 'node:crypto';
import { loadSigningKeyFile, loadVerifyKeysFile } from '@cordum/protocol';
import { MAX_HEARTBEAT_INTERVAL_MS, MAX_PARALLEL_JOBS } from '@cordum/worker-sdk';
import { commonEnvSchema, loadConfig, natsConnectionConfig, redisConnectionConfig, zAddr, zBool, zCsv, zDuration, zInt, zJobTtl, zParsedString, type NatsConnectionConfig, type RedisConnectionConfig } from '@cordum/service-kit';
import { hostname } from 'node:os';
import { z } from 'zod';

const TOPIC_RE = /^job(\.[A-Za-z0-9_-]+)+$/;
/** WORKER_STOP_TIMEOUT's ceiling: with 5 s for the answers (P218's ensureDeadline) the stop takes up to 18 s, under the 20 s the deploy files give a container. */
export const MAX_STOP_TIMEOUT_MS = 13_000;

/** P286: a blank id or pool is refused here, as one line naming the variable (the SDK refused it at start, exit 1 with a stack). */
const notBlank = z
  .string()
  .max(255)
  .refine((s) => s.trim() !== '', { message: 'must not be blank' });

export const echoWorkerEnvSchema = commonEnvSchema.extend({
  WORKER_ID: notBlank.optional(),
  WORKER_TOPICS: zCsv.superRefine((list, ctx) => {
    const bad = list.find((t) => !TOPIC_RE.test(t) || t.length > 255);
    if (bad !== undefined) ctx.addIssue({ code: 'custom', message: `must be a comma list of topics like job.echo (bad entry "${bad}")` });
  }),
  WORKER_POOL: notBlank.default('default'),
  WORKER_MAX_PARALLEL: zInt({ min: 1, max: MAX_PARALLEL_JOBS }).default(32),
  WORKER_HTTP_ADDR: zAddr.optional(),
  WORKER_EXEC_LOG: z.string().optional(),
  WORKER_ECHO_DELAY: zDuration.default(0),
  // P183: the fail:/retry: prompt hooks are for tests; off, the worker answers every job SUCCEEDED (D39).
  WORKER_ECHO_FAULTS: zBool.default(false),
  WORKER_HEARTBEAT_INTERVAL: zDuration
    .default(5_000)
    .refine((ms) => ms <= MAX_HEARTBEAT_INTERVAL_MS, { message: 'must be at most 10s: the scheduler forgets a worker 30s after its last heartbeat' }),
  WORKER_DIRECT_DISPATCH: zBool.default(true),
  // The whole stop is cut at 15 s (service-kit); the worker_shutdown answers must go out before.
  WORKER_STOP_TIMEOUT: zDuration.default(10_000).refine((ms) => ms <= MAX_STOP_TIMEOUT_MS, { message: 'must be at most 13s: the process then stops within 18s (5s more for the worker_shutdown answers), inside the 20s the deploy files give a container' }),
  // P61: a PEM P-256 private key; every packet the worker sends is signed with it.
  CAP_SIGNING_KEY_FILE: zParsedString((path) => loadSigningKeyFile(path, 'private')).optional(),
  // P61: a PEM P-256 public key; job requests and cancels must be signed with its key.
  CAP_VERIFY_KEY_FILE: zParsedString(loadVerifyKeysFile).optional(),
  // P235: the job TTL the gateways and schedulers use; the claim of each dispatch lives as long.
  JOB_TTL: zJobTtl,
});

export interface EchoWorkerConfig {
  workerId: string;
  topics: string[];
  pool: string;
  maxParallelJobs: number;
  httpAddr?: { host: string; port: number };
  execLogPath?: string;
  echoDelayMs: number;
  faultPrompts: boolean;
  heartbeatIntervalMs: number;
  directDispatch: boolean;
  stopTimeoutMs: number;
  /** JOB_TTL: the lifetime of each dispatch claim (worker:claim:{<id>}), as of the job's record (P235). */
  claimTtlMs: number;
  /** NATS_URL and the NATS login and TLS variables (natsConnectionConfig). */
  nats: NatsConnectionConfig;
  /** REDIS_URL, REDIS_CLUSTER_ADDRESSES, pool sizes and REDIS_TLS_* (redisConnectionConfig). */
  redis: RedisConnectionConfig;
  signingKey?: KeyObject;
  verifyKey?: readonly KeyObject[];
}

/** Pure: the env record in, typed config out; throws ConfigError naming the variable. */
export function loadEchoWorkerConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): EchoWorkerConfig {
  const e = loadConfig(echoWorkerEnvSchema, env);
  return {
    workerId: e.WORKER_ID ?? `echo-${hostname()}-${process.pid}`,
    topics: e.WORKER_TOPICS.length > 0 ? e.WORKER_TOPICS : ['job.echo', 'job.default'],
    pool: e.WORKER_POOL,
    maxParallelJobs: e.WORKER_MAX_PARALLEL,
    httpAddr: e.WORKER_HTTP_ADDR,
    execLogPath: e.WORKER_EXEC_LOG,
    echoDelayMs: e.WORKER_ECHO_DELAY,
    faultPrompts: e.WORKER_ECHO_FAULTS,
    heartbeatIntervalMs: Math.max(100, e.WORKER_HEARTBEAT_INTERVAL),
    directDispatch: e.WORKER_DIRECT_DISPATCH,
    stopTimeoutMs: e.WORKER_STOP_TIMEOUT,
    claimTtlMs: e.JOB_TTL,
    nats: natsConnectionConfig(e),
    redis: redisConnectionConfig(e),
    signingKey: e.CAP_SIGNING_KEY_FILE,
    verifyKey: e.CAP_VERIFY_KEY_FILE,
  };
}
