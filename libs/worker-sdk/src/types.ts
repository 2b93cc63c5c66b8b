import type { KeyObject } from 'node:crypto';
import type { Bus } from '@cordum/bus';
import type { JobRequest } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import type { Registry } from 'prom-client';

/** What a handler may answer; CANCELLED is decided by the SDK (see README, "Cancel"). */
export type JobOutcomeStatus = 'SUCCEEDED' | 'FAILED' | 'FAILED_RETRYABLE';

export interface JobOutcome {
  status: JobOutcomeStatus;
  /**
   * Written as JSON to `res:<job_id>` when defined. It must serialise with JSON.stringify (no
   * BigInt, cycle, function or symbol: the job is FAILED `result_not_serialisable`) and fit in
   * `maxResultBytes` (else FAILED `result_too_large`).
   */
  result?: unknown;
  /** Cut to 128 characters. */
  errorCode?: string;
  /** Cut to 4096 characters. */
  errorMessage?: string;
}

export interface JobContext {
  request: JobRequest;
  /** JSON stored at the request's context_ptr (`ctx:<job_id>`), null when there is none. */
  input: unknown;
  /** Aborted when a JobCancel for this dispatch arrives, or when stop() gives up waiting. */
  signal: AbortSignal;
  dispatchId: string;
  attempt: number;
  /**
   * Publishes a JobProgress (core NATS, best effort; never throws). `percent` is sent as an
   * integer 0-100 (rounded and clamped; NaN is 0), `message` cut to 4096 characters. Ignored once
   * the job has ended or its slot was taken back (`cancelGraceMs`).
   */
  progress(p: { percent?: number; message?: string }): void;
}

export type JobHandler = (job: JobContext) => Promise<JobOutcome>;

/** The slice of @cordum/bus the worker uses (a narrow port, easy to reason about). */
export type WorkerBus = Pick<Bus, 'subscribe' | 'publishCore' | 'publish' | 'flush'>;

export interface WorkerOptions {
  /**
   * Unique across the fleet: two processes with one id share its direct subject, its heartbeat
   * record and its claims (a process that hears another one on its direct subject logs
   * `another process runs with this worker id`). 1-255 characters.
   */
  workerId: string;
  /** The pool the scheduler routes to it by (pools.yaml `topics: {<topic>: <pool>}`); non-empty. */
  pool: string;
  /**
   * Job topics (`job.echo`), each matching `^job(\.[A-Za-z0-9_-]+)+$` (255 characters at most);
   * each is queue-subscribed with queue group = the subject (D10, D30). Wildcards and `sys.*`
   * subjects are refused.
   */
  topics: string[];
  bus: WorkerBus;
  redis: RedisClient;
  logger: Logger;
  /** Optional prom-client registry for cordum_worker_jobs_total / cordum_worker_active_jobs. */
  registry?: Registry;
  maxParallelJobs: number;
  /** Also listen on `worker.<id>.jobs` when the id is subject-safe (D44). Default true. */
  directDispatch?: boolean;
  /** 100-10000 (`MAX_HEARTBEAT_INTERVAL_MS`: the scheduler forgets a worker 30 s after its last heartbeat). Default 5000. */
  heartbeatIntervalMs?: number;
  /**
   * Handshake re-send period, so a scheduler that started after us learns our direct subject and
   * start acks. Default: with every heartbeat (`heartbeatIntervalMs`).
   */
  handshakeIntervalMs?: number;
  /** How long stop() waits for in-flight jobs, ≥ 0. Default 10 s. */
  stopTimeoutMs?: number;
  /**
   * How long a handler may run on after its job's cancel (a JobCancel, the scheduler's running
   * timeout) or after stop() gave up on it. Past it the worker takes the slot back: it answers
   * CANCELLED (unless stop() already answered), stops reporting the job, logs `handler did not
   * settle after its cancel; slot taken back` and ignores whatever the handler settles with later.
   * 0 to 3600000. Default 30 s.
   */
  cancelGraceMs?: number;
  /** Largest result JSON in UTF-8 bytes; a larger one answers FAILED `result_too_large`. 1 to 512 MiB. Default 8 MiB. */
  maxResultBytes?: number;
  /** Heartbeat capabilities; default: the topics. */
  capabilities?: string[];
  labels?: Record<string, string>;
  /** TTL of the per-job claim record (worker:claim:{<id>}). Default 7 d (the job TTL, D45). */
  claimTtlMs?: number;
  /**
   * How long a job runs before its start ack (RUNNING progress, D40) is published; a job that
   * ends sooner reports its result instead, which moves the job on by itself. 0 sends the ack
   * before the handler runs. 0–1000 (below the scheduler's shortest verify delay, 1 s).
   * Default 100 ms.
   */
  startAckDelayMs?: number;
  /**
   * How long a handler's result is retried when Redis refuses the `res:<id>` write (restarting,
   * failing over). The handler has run, so the job is never reported retryable for this: past
   * the budget it is reported FAILED `result_write_failed`. Default 30 s.
   */
  resultWriteBudgetMs?: number;
  /**
   * How long a JobResult's publish is retried (same msg id, backoff up to 2 s) while NATS is
   * away, so a job that ends during an outage still reports once NATS is back (P157). At least 5
   * tries are made; once `stop()` is called a publish gives up at its deadline. Past the budget
   * the job is left to the scheduler's running timeout. Default 120 s.
   */
  resultPublishBudgetMs?: number;
  sdkVersion?: string;
  /**
   * A P-256 private key (`loadSigningKey(pem, 'private')`): every packet the worker sends is
   * signed (D42) for a scheduler that verifies (CAP_VERIFY_KEY_FILE, P61). Unset: unsigned.
   */
  signingKey?: KeyObject;
  /**
   * A P-256 public key: job requests and cancels must carry a signature that verifies with it
   * (P61; the scheduler and gateway sign with CAP_SIGNING_KEY_FILE). Others are dropped as bad
   * packets. Several keys (a rotation: the old and the new pair's, P201): any of them. Unset: not verified.
   */
  verifyKey?: KeyObject | readonly KeyObject[];
  handler: JobHandler;
}

/**
 * succeeded + failed + retryable + cancelled count every JobResult the worker sent, by status
 * (the same as `cordum_worker_jobs_total{status}`): handler outcomes and the worker's own answers
 * (`worker_busy`, `worker_shutdown`, `worker_redis_unavailable`, ...). Each of those answers is
 * also counted in its own field below.
 */
export interface WorkerStats {
  activeJobs: number;
  /** Jobs handed to the handler. */
  executed: number;
  succeeded: number;
  failed: number;
  retryable: number;
  cancelled: number;
  /** Claimed but refused because maxParallelJobs was reached (answered FAILED_RETRYABLE worker_busy). */
  rejectedBusy: number;
  /** Answered FAILED_RETRYABLE `worker_shutdown`: refused while stopping, or abandoned at the stop deadline. */
  handedBack: number;
  /** Answered FAILED_RETRYABLE `worker_redis_unavailable`: the dispatch claim found Redis down. */
  redisUnavailable: number;
  /** Handlers still running `cancelGraceMs` after their cancel or abandon, whose slot was taken back. */
  stuckReleased: number;
  /** Redeliveries of a dispatch already taken (locally or by another worker). */
  duplicates: number;
  /** Dispatches that are not the job's current one, or whose job is terminal. */
  stale: number;
  badPackets: number;
  resultPublishFailures: number;
}

export interface Worker {
  readonly workerId: string;
  /** `worker.<id>.jobs` when direct dispatch is on, else null. */
  readonly directSubject: string | null;
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): WorkerStats;
}
