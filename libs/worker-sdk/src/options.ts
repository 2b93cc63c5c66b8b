// Every WorkerOptions field is checked here, at construction, before anything reaches NATS or
// Redis: a bad value used to start a worker that flooded the bus (heartbeatIntervalMs 0), ran
// gateway submissions directly (topic `sys.job.submit`) or lost its connection (a topic with a
// space). One WorkerError naming the option (and the bad entry) instead.
import { KeyObject } from 'node:crypto';
import { JOB_TOPIC_RE, MAX_TOPIC_LENGTH, WORKER_DRAINING_LABEL } from '@cordum/protocol';
import { MAX_TIMER_MS } from '@cordum/service-kit';
import { WorkerError } from './errors';
import { render } from './text';
import type { WorkerOptions } from './types';

export const DEFAULT_START_ACK_DELAY_MS = 100;
/** The scheduler's shortest SCHEDULER_DISPATCH_VERIFY_DELAY (BEHAVIOURS §3). */
export const MAX_START_ACK_DELAY_MS = 1_000;
/**
 * The scheduler forgets a worker 30 s after its last heartbeat (CONTRACT §3, the worker TTL): a
 * period past a third of that lets one lost heartbeat drop a live worker from routing, and a
 * period past the TTL keeps it out for good (jobs stay PENDING with no error anywhere).
 */
export const MAX_HEARTBEAT_INTERVAL_MS = 10_000;
/** maxParallelJobs' ceiling: Heartbeat.max_parallel_jobs is an int32 on the wire. */
export const MAX_PARALLEL_JOBS = 2_147_483_647;
/** Below this a worker's heartbeats (and their progress keep-alives) are load, not liveness. */
export const MIN_HEARTBEAT_INTERVAL_MS = 100;
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;
/**
 * What a stop needs past `stopTimeoutMs`: the `worker_shutdown` answers of the jobs still running
 * and their publish (P218). A process stop cut before that (runService's deadline, a container's
 * grace period) leaves those jobs to the running timeout instead of a retry.
 */
export const STOP_ANSWER_MARGIN_MS = 5_000;

/** Largest `stopTimeoutMs`: with STOP_ANSWER_MARGIN_MS, what a Node timer holds (2^31 - 1 ms; a longer one fires at once). */
export const MAX_STOP_TIMEOUT_MS = MAX_TIMER_MS - STOP_ANSWER_MARGIN_MS;

/** The least time a process must give `worker.stop()`: `stopTimeoutMs` plus the answers (P218). Pass it to `shutdown.ensureDeadline` in runService's `create`. */
export function workerStopDeadlineMs(o: Pick<WorkerOptions, 'workerId' | 'stopTimeoutMs'>): number {
  return (o.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS) + STOP_ANSWER_MARGIN_MS;
}
/** How long a handler may run on after its job's cancel (or stop's abandon) before its slot is taken back. */
export const DEFAULT_CANCEL_GRACE_MS = 30_000;
/** P337: the shortest claimTtlMs: JOB_TTL's floor (a claim must outlive the job it is for). */
export const MIN_CLAIM_TTL_MS = 60_000;
/**
 * Largest result JSON (UTF-8 bytes) written to `res:<id>`. 8 MiB: four times what the gateway
 * takes as a submission (2 MiB), written in well under the default Redis command timeout (1.5 s)
 * even over 100 Mbit/s, and parsed by the gateway's GET in tens of milliseconds. Larger outputs
 * belong in an object store, with their address in the result.
 */
export const DEFAULT_MAX_RESULT_BYTES = 8 * 1024 * 1024;
/** Redis's own bound on a string value (proto-max-bulk-len's default, 512 MB). */
export const MAX_MAX_RESULT_BYTES = 512 * 1024 * 1024;
export const DEFAULT_RESULT_WRITE_BUDGET_MS = 30_000;
/** How long a result's JetStream publish is retried while NATS is away (P157): under the default 300 s running timeout. */
export const DEFAULT_RESULT_PUBLISH_BUDGET_MS = 120_000;
export const DEFAULT_CLAIM_TTL_MS = 7 * 24 * 3600_000;

const invalid = (message: string): WorkerError => new WorkerError('worker_invalid_options', message);

function intIn(name: string, v: unknown, min: number, max: number, unit = ''): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer of at least ${min}` : `an integer from ${min} to ${max}`;
    throw invalid(`${name} must be ${range}${unit}, got ${render(v, 100)}`);
  }
}

/**
 * A P-256 key of the given kind (P218): a wrong one was accepted, and then every heartbeat failed
 * to sign (the worker never registered) or every request failed to verify (each dispatch dropped).
 */
function p256Key(name: string, v: unknown, kind: 'private' | 'public'): void {
  const how = kind === 'private' ? "loadSigningKey(pem, 'private') or loadSigningKeyFile(path, 'private')" : "loadSigningKey(pem, 'public') or loadSigningKeyFile(path, 'public')";
  if (!(v instanceof KeyObject)) throw invalid(`${name} must be a KeyObject from ${how}, got ${render(v, 100)}`);
  const curve = v.asymmetricKeyDetails?.namedCurve;
  if (v.type !== kind || v.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw invalid(`${name} must be an ECDSA P-256 ${kind} key (${how}), got a ${v.asymmetricKeyType ?? 'secret'}${curve ? ` ${curve}` : ''} ${v.type} key`);
  }
}

function nonEmptyString(name: string, v: unknown, max = 255): void {
  if (typeof v !== 'string' || v.trim() === '' || v.length > max) throw invalid(`${name} must be a non-empty string of at most ${max} characters, got ${render(v, 100)}`);
}

/**
 * Throws WorkerError `worker_invalid_options`, naming the option, for anything createWorker would
 * refuse except the connections (`bus`, `redis`, `logger`), so a config loader can call it before
 * connecting to NATS and Redis. createWorker calls it too.
 */
export function validateWorkerOptions(o: Omit<WorkerOptions, 'bus' | 'redis' | 'logger'>): void {
  if (typeof o !== 'object' || o === null) throw invalid('options must be an object');
  nonEmptyString('workerId', o.workerId);
  nonEmptyString('pool', o.pool);
  if (!Array.isArray(o.topics) || o.topics.length === 0) throw invalid(`topics must be a non-empty array of job topics such as "job.echo", got ${render(o.topics, 100)}`);
  for (const t of o.topics as unknown[]) {
    // The topic is the subject (D30): a wildcard, a sys.* subject or a space would subscribe to
    // what is not a job queue (`sys.job.submit` ran gateway submissions with no claim or policy).
    if (typeof t !== 'string' || t.length > MAX_TOPIC_LENGTH || !JOB_TOPIC_RE.test(t)) {
      throw invalid(`topics: ${render(t, 100)} is not a job topic: each must match ${JOB_TOPIC_RE.source} (at most ${MAX_TOPIC_LENGTH} characters), e.g. "job.echo"`);
    }
  }
  // An int32 on the wire (Heartbeat.max_parallel_jobs): a larger one failed every heartbeat, and the worker was never registered (P192).
  if (!Number.isInteger(o.maxParallelJobs) || o.maxParallelJobs < 1 || o.maxParallelJobs > MAX_PARALLEL_JOBS) throw invalid(`maxParallelJobs must be an integer from 1 to ${MAX_PARALLEL_JOBS}, got ${render(o.maxParallelJobs, 100)}`);
  if (typeof o.handler !== 'function') throw invalid(`handler must be a function (job) => Promise<JobOutcome>, got ${render(o.handler, 100)}`);
  intIn('heartbeatIntervalMs', o.heartbeatIntervalMs, MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS, ' (ms; the scheduler forgets a worker 30 s after its last heartbeat)');
  intIn('handshakeIntervalMs', o.handshakeIntervalMs, MIN_HEARTBEAT_INTERVAL_MS, 3_600_000, ' (ms)');
  // P285: the process's stop deadline (workerStopDeadlineMs) must fit a Node timer, or it fires at once.
  intIn('stopTimeoutMs', o.stopTimeoutMs, 0, MAX_STOP_TIMEOUT_MS, ' (ms; with the 5 s for the answers, a Node timer holds at most about 24.8 days)');
  intIn('cancelGraceMs', o.cancelGraceMs, 0, 3_600_000, ' (ms)');
  intIn('startAckDelayMs', o.startAckDelayMs, 0, MAX_START_ACK_DELAY_MS, ' (ms)');
  intIn('resultWriteBudgetMs', o.resultWriteBudgetMs, 0, Number.MAX_SAFE_INTEGER, ' (ms)');
  intIn('resultPublishBudgetMs', o.resultPublishBudgetMs, 0, Number.MAX_SAFE_INTEGER, ' (ms)');
  intIn('maxResultBytes', o.maxResultBytes, 1, MAX_MAX_RESULT_BYTES);
  // P337: as JOB_TTL's floor (1 minute). A claim that expires while its job still runs (a seconds-for-
  // milliseconds slip) lets the verifier and the reconciler find no claim and send a new attempt.
  intIn('claimTtlMs', o.claimTtlMs, MIN_CLAIM_TTL_MS, Number.MAX_SAFE_INTEGER, ' (ms; give it your JOB_TTL)');
  if (o.capabilities !== undefined && (!Array.isArray(o.capabilities) || o.capabilities.some((c) => typeof c !== 'string'))) {
    throw invalid(`capabilities must be an array of strings, got ${render(o.capabilities, 100)}`);
  }
  if (o.labels !== undefined) {
    // A heartbeat carries them as map<string, string>: any other value fails its encoding on a timer.
    const bad = typeof o.labels !== 'object' || o.labels === null || Array.isArray(o.labels) ? o.labels : Object.entries(o.labels).find(([, v]) => typeof v !== 'string');
    if (bad !== undefined) throw invalid(`labels must map names to string values, got ${render(bad, 100)}`);
    // `cordum.*` labels are the SDK's own: `cordum.draining: "true"` kept the worker out of routing for good (P218).
    const reserved = Object.keys(o.labels).find((k) => k.startsWith('cordum.'));
    if (reserved !== undefined) throw invalid(`labels: ${render(reserved, 100)} is reserved (cordum.* labels are set by the SDK, e.g. ${WORKER_DRAINING_LABEL} while it stops)`);
  }
  // P218: the rest of the options, checked like the others instead of failing later on a timer.
  if (o.directDispatch !== undefined && typeof o.directDispatch !== 'boolean') throw invalid(`directDispatch must be true or false, got ${render(o.directDispatch, 100)}`);
  if (o.sdkVersion !== undefined && (typeof o.sdkVersion !== 'string' || o.sdkVersion.length > 64)) throw invalid(`sdkVersion must be a string of at most 64 characters, got ${render(o.sdkVersion, 100)}`);
  if (o.registry !== undefined && (typeof o.registry !== 'object' || o.registry === null || typeof (o.registry as { registerMetric?: unknown }).registerMetric !== 'function')) {
    throw invalid(`registry must be a prom-client Registry, got ${render(o.registry, 100)}`);
  }
  if (o.signingKey !== undefined) p256Key('signingKey', o.signingKey, 'private');
  if (o.verifyKey !== undefined) {
    const keys: readonly unknown[] = Array.isArray(o.verifyKey) ? o.verifyKey : [o.verifyKey];
    if (keys.length === 0) throw invalid('verifyKey: an empty array verifies nothing, so every request would be dropped; leave verifyKey unset to accept unsigned requests');
    keys.forEach((k, i) => p256Key(Array.isArray(o.verifyKey) ? `verifyKey[${i}]` : 'verifyKey', k, 'public'));
  }
}

/** validateWorkerOptions, plus the connections it leaves out. */
export function validateAll(o: WorkerOptions): void {
  validateWorkerOptions(o);
  for (const name of ['bus', 'redis', 'logger'] as const) {
    if (typeof o[name] !== 'object' || o[name] === null) throw invalid(`${name} is required (connectWorkerRuntime gives bus and redis)`);
  }
}
