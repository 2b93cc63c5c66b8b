// A CAP worker: queue-subscribes its topics, acks starts, runs each dispatch
// at most once (claim-2.lua) and reports results on JetStream (D1, D9, D40).
import { subjects, type Subscription } from '@cordum/bus';
import { WORKER_DRAINING_LABEL, packetDecoder, packetEncoder, type BusPacket, type JobCancel, type JobRequest } from '@cordum/protocol';
import { isRedisUnavailable, redisErrorText } from '@cordum/redis';
import { createLogThrottle, type Logger } from '@cordum/service-kit';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { WorkerError } from './errors';
import { InputError, JobIo } from './job-io';
import { guardSignal } from './signal';
import { replyWithin } from './within';
import { directSubject as directSubjectFor } from './keys';
import { cpuLoadPct, memoryLoadPct } from './load';
import { WorkerMetrics } from './metrics';
import {
  DEFAULT_CANCEL_GRACE_MS,
  DEFAULT_CLAIM_TTL_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_MAX_RESULT_BYTES,
  DEFAULT_RESULT_WRITE_BUDGET_MS,
  DEFAULT_RESULT_PUBLISH_BUDGET_MS,
  DEFAULT_START_ACK_DELAY_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  validateAll,
} from './options';
import { handshakePacket, heartbeatPacket, progressPacket, resultMsgId, resultPacket, SDK_VERSION, type Encode, type ResultStatus } from './packets';
import { bounded, MAX_ERROR_CODE_CHARS, MAX_ERROR_MESSAGE_CHARS, normaliseProgress, render, serialise, thrownMessage, thrownStack, utf8Over } from './text';
import type { JobOutcome, Worker, WorkerOptions, WorkerStats } from './types';


type LifecycleState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped';

interface RunningJob {
  key: string;
  request: JobRequest;
  traceId: string;
  controller: AbortController;
  cancelled: boolean;
  /** stop() gave up on it and already answered for it. */
  abandoned: boolean;
  /** The handler settled, or its slot was taken back: what it sends through progress() is dropped. */
  closed: boolean;
  /**
   * The stop deadline came after the handler settled, while its result was being written or
   * published: the write in progress (or the next one) is the last try (P137).
   */
  finishing: boolean;
  /** Resolves once the job has left run(): its answer is published, or given up. */
  done: Promise<void>;
  /** The pending start ack; cleared once any progress for the job went out or it ended. */
  ackTimer: NodeJS.Timeout | undefined;
  /** Runs out `cancelGraceMs` after the job's cancel or abandon (then `onStuck`). */
  graceTimer: NodeJS.Timeout | undefined;
  onStuck: () => void;
  /** The handler's latest progress, repeated by each heartbeat's keep-alive (not reset to 0). */
  lastProgress?: { percent: number; message: string };
  /** When a progress packet last went out for the job (monotonic ms; P337's throttle). */
  progressSentAt?: number;
  /** A handler's progress() held back by the throttle, sent when it runs out. */
  progressTimer?: NodeJS.Timeout;
}

interface Reply {
  status: ResultStatus;
  resultPtr?: string;
  errorCode?: string;
  errorMessage?: string;
}

type Settled = { ok: true; outcome: unknown } | { ok: false; err: unknown };

const SEEN_LIMIT = 10_000;
/** A result publish is tried at least this often, and then until its budget or the stop deadline (P157). */
const PUBLISH_TRIES = 5;
const PUBLISH_MAX_WAIT_MS = 2_000;
/** P233: how long a stopping worker's job subjects stay open after its last heartbeat, refusing what comes. */
const LATE_DISPATCH_WINDOW_MS = 500;
/**
 * P319: how long after that window a claim of it still on its way (a slow Redis) is waited for,
 * whatever `stopTimeoutMs` is: with one under the window, stop() resolved at the window's end and
 * the claim's `worker_busy` refusal never went out (P266's gap, back). Claims only: a stuck
 * handler does not hold the stop longer.
 */
const LATE_ADMISSION_ANSWER_MS = 2_000;
const CANCELLED_REPLY: Reply = { status: 'CANCELLED', errorCode: 'cancelled', errorMessage: 'job cancelled' };
const OUTCOME_STATUSES: ReadonlySet<unknown> = new Set(['SUCCEEDED', 'FAILED', 'FAILED_RETRYABLE']);
const OUTCOME_SHAPE = "{ status: 'SUCCEEDED' | 'FAILED' | 'FAILED_RETRYABLE', result?: <JSON value>, errorCode?: string, errorMessage?: string }";
/** Longest error message a `job failed` log line carries (the JobResult carries up to 4096). */
const LOG_MESSAGE_CHARS = 1_000;
const REDIS_PING_TIMEOUT_MS = 1_000;
/** P337: the shortest time between two progress packets of a job sent for its handler's progress(). */
export const PROGRESS_MIN_INTERVAL_MS = 250;
/** Waiting for Redis at start is said after 2 s, then every 30 s (as the bus says it for NATS). */
const REDIS_WAIT_NOTICE_MS = 2_000;
const REDIS_WAIT_REPEAT_MS = 30_000;
const REDIS_WAIT_RETRY_MS = 500;
/** A dropped cancel is logged at most once per this long per reason (P220). */
const CANCEL_DROP_LOG_EVERY_MS = 60_000;
/**
 * What a worker publishes at start on `worker.<id>.instance`, a subject of worker-sdk's own next to
 * its direct subject `worker.<id>.jobs` (not a CAP subject: the CAP subjects carry BusPackets
 * only): every process with that id hears it, so two processes with one id find each other.
 */
const INSTANCE_MARKER = Buffer.from('cordum-worker-instance:', 'utf8');
const MAX_OTHER_INSTANCES = 16;

class CapWorker implements Worker {
  readonly workerId: string;
  readonly directSubject: string | null;
  private state: LifecycleState = 'created';
  private readonly log: Logger;
  private readonly io: JobIo;
  /** Signs what the worker sends when `signingKey` is set (P61). */
  private readonly encode: Encode;
  /** Requires signed requests and cancels when `verifyKey` is set (P61). */
  private readonly decode: (bytes: Uint8Array) => BusPacket;
  private readonly startAckDelayMs: number;
  private readonly resultWriteBudgetMs: number;
  private readonly resultPublishBudgetMs: number;
  /** When result publishes stop retrying past PUBLISH_TRIES: stop()'s deadline once it is called. */
  private publishCutoff = Number.POSITIVE_INFINITY;
  private readonly heartbeatIntervalMs: number;
  private readonly stopTimeoutMs: number;
  private readonly cancelGraceMs: number;
  private readonly maxResultBytes: number;
  private readonly metrics: WorkerMetrics | null;
  private readonly subs: Subscription[] = [];
  private cancelSub: Subscription | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Map<string, RunningJob>();
  /**
   * P242: dispatches whose claim is on its way to Redis, and whether a JobCancel for them came
   * meanwhile. Such a cancel found no running job and was dropped; the job then ran until the
   * scheduler sent the cancel again (P135, about 10 s later).
   */
  private readonly claiming = new Map<string, { request: JobRequest; cancelled: boolean }>();
  /** Every admission in flight (claim, run, result publish), awaited by stop(). */
  private readonly inflight = new Set<Promise<void>>();
  /** P233: answers to jobs refused because the worker is stopping, awaited by stop(). */
  private readonly refusals = new Set<Promise<unknown>>();
  /** Recently seen `<job_id>:<dispatch_id>`, insertion ordered, bounded. */
  private readonly seen = new Set<string>();
  /** The created_at of the last heartbeat sent (epoch ms). */
  private lastBeatMs = 0;
  private stopPromise: Promise<void> | null = null;
  /** False from a failed Redis check (or a claim that found Redis down) to a PING that answers: heartbeats say draining. */
  private redisUp = true;
  private redisDownSince = 0;
  private redisCheck: Promise<void> | null = null;
  /** PINGs failed in a row (one slow PING, queued behind a big result write, is not an outage). */
  private pingFailures = 0;
  /** This process, told apart from another one started with the same worker id. */
  private readonly instance = randomUUID();
  private readonly otherInstances = new Set<string>();
  private instancesOverflowed = false;
  /** P220: when each reason for a dropped cancel may be logged again. */
  private readonly mayLogCancelDrop = createLogThrottle(CANCEL_DROP_LOG_EVERY_MS, 100);
  private readonly counters: Omit<WorkerStats, 'activeJobs'> = {
    executed: 0, succeeded: 0, failed: 0, retryable: 0, cancelled: 0, rejectedBusy: 0, handedBack: 0, redisUnavailable: 0,
    stuckReleased: 0, duplicates: 0, stale: 0, badPackets: 0, resultPublishFailures: 0,
  };

  constructor(private readonly o: WorkerOptions) {
    validateAll(o);
    this.startAckDelayMs = o.startAckDelayMs ?? DEFAULT_START_ACK_DELAY_MS;
    this.resultWriteBudgetMs = o.resultWriteBudgetMs ?? DEFAULT_RESULT_WRITE_BUDGET_MS;
    this.resultPublishBudgetMs = o.resultPublishBudgetMs ?? DEFAULT_RESULT_PUBLISH_BUDGET_MS;
    this.heartbeatIntervalMs = o.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.stopTimeoutMs = o.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    this.cancelGraceMs = o.cancelGraceMs ?? DEFAULT_CANCEL_GRACE_MS;
    this.maxResultBytes = o.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    this.workerId = o.workerId;
    this.directSubject = (o.directDispatch ?? true) ? directSubjectFor(o.workerId) : null;
    this.log = o.logger.child({ worker_id: o.workerId });
    this.io = new JobIo(o.redis, o.claimTtlMs ?? DEFAULT_CLAIM_TTL_MS);
    this.encode = packetEncoder(o.signingKey);
    this.decode = packetDecoder(o.verifyKey);
    this.metrics = o.registry ? new WorkerMetrics(o.registry) : null;
  }

  stats(): WorkerStats {
    return { activeJobs: this.running.size, ...this.counters };
  }

  async start(): Promise<void> {
    if (this.state !== 'created') throw new WorkerError('worker_state', `start() called in state ${this.state}`);
    this.state = 'starting';
    // Redis before the subscriptions: a worker that cannot reach it would take jobs only to
    // answer each one worker_redis_unavailable, spending their attempts (D13) in seconds.
    if (!(await this.waitForRedis())) return; // stop() was called meanwhile
    this.state = 'running';
    const onRequest = (data: Uint8Array, subject: string): void => this.onRequest(data, subject);
    for (const topic of this.o.topics) this.subs.push(this.o.bus.subscribe(topic, onRequest, { queue: topic }));
    if (this.directSubject) {
      this.subs.push(this.o.bus.subscribe(this.directSubject, onRequest));
      this.subs.push(this.o.bus.subscribe(instanceSubjectFor(this.o.workerId), (data) => isInstanceMarker(data) && this.onInstanceMarker(data)));
    }
    this.cancelSub = this.o.bus.subscribe(subjects.cancel, (data) => this.onCancel(data));
    this.sendHandshake();
    this.beat();
    // By default the handshake goes out with every heartbeat: a scheduler replica that started
    // after us (or reconnected) learns our direct subject and start acks in the same interval as
    // our heartbeat, not up to 30 s later; until then it dispatches to us by topic, unverified
    // (a dispatch lost then waits for the dispatch timeout instead of the verify delay).
    const hsEvery = this.o.handshakeIntervalMs;
    const hb = setInterval(() => this.tick(hsEvery === undefined), this.heartbeatIntervalMs);
    hb.unref();
    this.timers.push(hb);
    if (hsEvery !== undefined) {
      const hs = setInterval(() => this.sendHandshake(), hsEvery);
      hs.unref();
      this.timers.push(hs);
    }
    // Subscriptions are registered at the server only after a round trip: once start()
    // resolves, a published job is guaranteed to reach us.
    await this.o.bus.flush();
    this.announceInstance();
    this.log.info('worker started', { topics: this.o.topics, direct: this.directSubject, pool: this.o.pool, max_parallel_jobs: this.o.maxParallelJobs, cancel_grace_ms: this.cancelGraceMs, max_result_bytes: this.maxResultBytes });
  }

  stop(): Promise<void> {
    this.stopPromise ??= this.shutdown();
    return this.stopPromise;
  }

  private async shutdown(): Promise<void> {
    const wasRunning = this.state === 'running';
    this.state = 'stopping';
    this.publishCutoff = performance.now() + this.stopTimeoutMs;
    for (const t of this.timers) clearInterval(t);
    const subs = this.subs.splice(0);
    if (wasRunning) {
      // Intake is closed: one last heartbeat says so, and schedulers stop routing here now rather
      // than when our heartbeats time out (a job redispatched off us must not come back).
      this.beat({ stopping: true });
      await this.o.bus.flush().catch(() => undefined);
      // P233: dispatches are core NATS, so one a scheduler sent before it read that heartbeat
      // reached nobody once we unsubscribed, and waited for the dispatch verifier (10 s). For a
      // moment longer the job subjects stay open and such a job is refused `worker_busy` (not
      // started, so not charged an attempt, D48), and goes elsewhere at once.
      const windowEnd = performance.now() + LATE_DISPATCH_WINDOW_MS;
      const closeIntake = new Promise<void>((resolve) => setTimeout(resolve, LATE_DISPATCH_WINDOW_MS)).then(() => {
        for (const s of subs) s.unsubscribe();
      });
      const drained = await this.drain(this.stopTimeoutMs);
      if (!drained) await this.abandonRunning();
      await closeIntake;
      // P266: an admission of the window still under way (its claim held in a slow Redis) answers
      // before stop() resolves, within the stop deadline: the process exits after it, and a claim
      // whose refusal never went out reads as a started job (P12) and waits for the running timeout.
      await this.drain(Math.max(0, this.publishCutoff - performance.now()));
      // P319: a claim of the window still on its way past that deadline (a stopTimeoutMs under
      // the window) is waited for too, for a bounded time: its refusal must go out.
      await this.claimsSettled(windowEnd + LATE_ADMISSION_ANSWER_MS);
      // The refusals of the window have gone out before stop() resolves.
      await Promise.allSettled([...this.refusals]);
    } else {
      for (const s of subs) s.unsubscribe();
    }
    this.cancelSub?.unsubscribe();
    this.cancelSub = null;
    this.state = 'stopped';
    this.log.info('worker stopped', { ...this.stats() });
  }

  /** Resolves true once nothing is in flight, false at the deadline. */
  /** Until no dispatch claim is on its way (a settled claim's refusal is in `refusals` by then), or `untilMs`. */
  private async claimsSettled(untilMs: number): Promise<void> {
    while (this.claiming.size > 0) {
      const left = untilMs - performance.now();
      if (left <= 0) return;
      let t: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.inflight]), new Promise<void>((r) => (t = setTimeout(r, Math.min(left, 50))))]);
      clearTimeout(t);
    }
  }

  private async drain(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (this.inflight.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      let t: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (t = setTimeout(r, left)));
      await Promise.race([Promise.allSettled([...this.inflight]), timeout]);
      clearTimeout(t);
    }
    return true;
  }

  /**
   * Jobs whose handler is still running at the stop deadline are answered FAILED_RETRYABLE so
   * the scheduler redispatches them after its retry backoff (D1 c, D13) instead of waiting for
   * the timeout; a job
   * cancelled meanwhile is answered CANCELLED, as it would have been. A job whose handler has
   * settled has run: it is never answered retryable, which would run it a second time (P137).
   * Its own answer goes on: the result write in progress, or the next one, is its last try (a
   * write that fails then is FAILED `result_write_failed`, as past resultWriteBudgetMs), and
   * stop() waits for its publish, which gives up after PUBLISH_TRIES tries past the deadline.
   */
  private async abandonRunning(): Promise<void> {
    const all = [...this.running.values()];
    const finishing = all.filter((j) => j.closed);
    const jobs = all.filter((j) => !j.closed);
    this.log.warn('stop deadline reached, abandoning running jobs', {
      jobs: jobs.map((j) => j.request.jobId), answering: finishing.map((j) => j.request.jobId),
    });
    for (const job of finishing) job.finishing = true;
    await Promise.all([
      ...finishing.map((job) => job.done),
      ...jobs.map(async (job) => {
        job.abandoned = true;
        job.closed = true;
        clearTimeout(job.ackTimer);
        job.controller.abort(new WorkerError('worker_stopped', 'worker stopping'));
        this.startGrace(job);
        if (!job.cancelled) this.counters.handedBack += 1;
        await this.answer(job.request, job.traceId, 0, job.cancelled ? CANCELLED_REPLY : { status: 'FAILED_RETRYABLE', errorCode: 'worker_shutdown', errorMessage: 'worker stopped before the job finished' });
      }),
    ]);
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    // Nothing in an admission is meant to throw; should something, it is logged, not an
    // unhandled rejection that stops the process and every job on it.
    void p
      .catch((err: unknown) => this.log.error('job admission failed unexpectedly; the scheduler timeout is the backstop', { err: thrownMessage(err) }))
      .finally(() => this.inflight.delete(p));
  }

  private onRequest(data: Uint8Array, subject: string): void {
    let packet;
    try {
      packet = this.decode(data);
    } catch (err) {
      this.counters.badPackets += 1;
      this.log.warn('dropping undecodable packet', { subject, bytes: data.length, err: (err as Error).message });
      return;
    }
    if (packet.payload.case !== 'jobRequest' || !packet.payload.value.jobId) {
      this.counters.badPackets += 1;
      this.log.warn('dropping packet that is not a JobRequest with a job_id', { subject, payload: packet.payload.case ?? 'none' });
      return;
    }
    const request = packet.payload.value;
    const key = `${request.jobId}:${request.dispatch?.dispatchId ?? ''}`;
    // Local fast path for a redelivery that reaches the same process; claim-2.lua covers the rest.
    if (this.seen.has(key)) {
      this.counters.duplicates += 1;
      this.log.info('duplicate dispatch ignored', { job_id: request.jobId, dispatch_id: request.dispatch?.dispatchId, subject });
      return;
    }
    this.remember(key);
    this.track(this.admit(request, packet.traceId, key));
  }

  private remember(key: string): void {
    this.seen.add(key);
    if (this.seen.size > SEEN_LIMIT) {
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }

  private async admit(request: JobRequest, traceId: string, key: string): Promise<void> {
    const jobLog = { job_id: request.jobId, dispatch_id: request.dispatch?.dispatchId, attempt: Number(request.dispatch?.attempt ?? 0n) };
    const dispatchId = request.dispatch?.dispatchId ?? '';
    // The input is read while the claim runs (one round trip instead of two, issue 7); reading
    // has no effect, and when the claim says no the value is dropped.
    const input = this.io.readInput(request.jobId, request.contextPtr);
    input.catch(() => undefined);
    // A request without a dispatch identity (an old scheduler) has nothing to fence on: the local check is all we do.
    if (dispatchId !== '') {
      let verdict;
      const claim = { request, cancelled: false };
      this.claiming.set(key, claim);
      try {
        verdict = await this.io.claim(request.jobId, dispatchId, Number(request.dispatch?.attempt ?? 0n), this.workerId);
      } catch (err) {
        const text = redisErrorText(err);
        const unreachable = isRedisUnavailable(err);
        if (unreachable) this.redisLost(text);
        this.log.error('dispatch claim failed (redis)', { ...jobLog, err: text });
        this.counters.redisUnavailable += 1;
        const errorMessage = unreachable ? `worker ${this.workerId} cannot reach Redis: ${text}` : `worker ${this.workerId} could not claim the dispatch in Redis: ${text}`;
        await this.answer(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_redis_unavailable', errorMessage });
        return;
      } finally {
        this.claiming.delete(key);
      }
      if (verdict !== 'claimed') {
        if (verdict === 'duplicate') this.counters.duplicates += 1;
        else this.counters.stale += 1;
        this.log.info('dispatch not run', { ...jobLog, verdict });
        return;
      }
      if (claim.cancelled) {
        // Cancelled while its claim was on its way: the job is CANCELLED in the store (D5), so the
        // handler never starts; the answer ends the attempt, and with it the scheduler's resends.
        await this.answer(request, traceId, 0, CANCELLED_REPLY);
        return;
      }
    }
    if (this.state !== 'running') {
      // Not started: refused as busy (D48, not charged an attempt), so it goes to another worker
      // at once (P233). `worker_shutdown` is for a job whose handler ran.
      this.counters.handedBack += 1;
      const refusal = this.answer(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_busy', errorMessage: `worker ${this.workerId} is stopping` });
      this.refusals.add(refusal);
      await refusal.finally(() => this.refusals.delete(refusal));
      return;
    }
    // Refuse rather than queue: a queued job without a start ack would be redispatched elsewhere (D1 b).
    if (this.running.size >= this.o.maxParallelJobs) {
      this.counters.rejectedBusy += 1;
      this.log.warn('worker busy, job refused', { ...jobLog, active_jobs: this.running.size });
      await this.answer(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_busy', errorMessage: `worker ${this.workerId} is at max_parallel_jobs ${this.o.maxParallelJobs}` });
      return;
    }
    await this.run(request, traceId, key, input);
  }

  private async run(request: JobRequest, traceId: string, key: string, input: Promise<unknown>): Promise<void> {
    let onStuck = (): void => undefined;
    const stuck = new Promise<'stuck'>((resolve) => (onStuck = () => resolve('stuck')));
    let onDone = (): void => undefined;
    const done = new Promise<void>((resolve) => (onDone = resolve));
    const job: RunningJob = {
      key, request, traceId, controller: new AbortController(), cancelled: false, abandoned: false, closed: false, finishing: false, done, ackTimer: undefined, graceTimer: undefined, onStuck,
    };
    // P337: an abort listener of the handler's that throws or rejects is logged, not a crash.
    guardSignal(job.controller.signal, (err) => this.log.warn('handler abort listener failed', { job_id: request.jobId, err: thrownMessage(err) }));
    this.running.set(key, job);
    // inc/dec, not set: workers sharing one registry share the gauge, and each set its own count (P218).
    this.metrics?.active.inc();
    const startedAt = performance.now();
    try {
      // The start ack (D40). A job that ends within the delay reports its result instead: the
      // result moves the job on by itself, and the scheduler's verifier reads the claim (D1 b),
      // so the ack would only cost a bus message, a scheduler write and a broadcast (issue 7).
      if (this.startAckDelayMs === 0) this.sendProgress(job);
      else job.ackTimer = setTimeout(() => this.sendProgress(job), this.startAckDelayMs);
      const settled: Promise<Settled> = this.execute(job, input).then(
        (outcome) => ({ ok: true, outcome }),
        (err: unknown) => ({ ok: false, err }),
      );
      // A handler that never settles after its cancel must not hold its slot for good: past
      // cancelGraceMs the slot is taken back and whatever the handler settles with is dropped.
      const first = await Promise.race([settled, stuck]);
      job.closed = true;
      clearTimeout(job.graceTimer);
      let reply: Reply;
      if (first === 'stuck') {
        this.takeBack(job);
        if (job.abandoned) return; // stop() already answered for it
        reply = CANCELLED_REPLY;
      } else {
        // stop() answered for it and another worker may be running it now: a late result must
        // not overwrite that attempt's res:<id> (res: is per job, not per attempt).
        if (job.abandoned) return;
        reply = await this.replyFor(job, first);
      }
      clearTimeout(job.ackTimer); // every outcome passes here
      if (job.abandoned) return; // stop() already answered for it
      if (reply.status === 'FAILED' || reply.status === 'FAILED_RETRYABLE') {
        this.log.warn('job failed', {
          job_id: request.jobId, dispatch_id: request.dispatch?.dispatchId, attempt: Number(request.dispatch?.attempt ?? 0n),
          status: reply.status, error_code: bounded(reply.errorCode ?? '', MAX_ERROR_CODE_CHARS), err: bounded(reply.errorMessage ?? '', LOG_MESSAGE_CHARS),
        });
      }
      await this.answer(request, traceId, performance.now() - startedAt, reply);
    } finally {
      job.closed = true;
      clearTimeout(job.ackTimer);
      clearTimeout(job.graceTimer);
      clearTimeout(job.progressTimer);
      this.free(job);
      onDone();
    }
  }

  private async execute(job: RunningJob, pending: Promise<unknown>): Promise<unknown> {
    const input = await pending;
    // P266: the input is read beside the claim; a cancel or the stop deadline may have come while
    // it was on its way (a slow ctx: node of a cluster). The handler never starts then: the cancel
    // is answered CANCELLED (replyFor), a job stop() handed back is answered already.
    if (job.cancelled || job.abandoned) throw new WorkerError('worker_stopped', 'not started: cancelled or handed back while its input was read');
    this.counters.executed += 1;
    return this.o.handler({
      request: job.request,
      input,
      signal: job.controller.signal,
      dispatchId: job.request.dispatch?.dispatchId ?? '',
      attempt: Number(job.request.dispatch?.attempt ?? 0n),
      progress: (p) => this.handlerProgress(job, p),
    });
  }

  /** What the worker answers for a handler that settled (or an input it could not read). */
  private async replyFor(job: RunningJob, settled: Settled): Promise<Reply> {
    // The job is already CANCELLED in the store (D5): whatever the handler answered is moot.
    if (job.cancelled) return CANCELLED_REPLY;
    if (!settled.ok) {
      const err = settled.err;
      if (err instanceof InputError) {
        if (err.code !== 'context_unreadable') return { status: 'FAILED', errorCode: err.code, errorMessage: err.message };
        if (isRedisUnavailable(err.cause)) this.redisLost(redisErrorText(err.cause));
        return { status: 'FAILED_RETRYABLE', errorCode: err.code, errorMessage: `worker ${this.workerId} ${err.message}` };
      }
      const stack = thrownStack(err);
      if (stack !== undefined) this.log.debug('handler error stack', { job_id: job.request.jobId, stack });
      return { status: 'FAILED', errorCode: errorCodeOf(err), errorMessage: thrownMessage(err) };
    }
    const read = readOutcome(settled.outcome);
    // A status the scheduler does not know (0 for 'DONE') left the job to its running timeout.
    if (!read.ok) return { status: 'FAILED', errorCode: 'handler_invalid_outcome', errorMessage: `${read.problem}; a handler must resolve to ${OUTCOME_SHAPE}` };
    return this.store(job, read.outcome);
  }

  /**
   * Writes the handler's result at res:<id>. It is serialised once, first: a result JSON cannot
   * represent (BigInt, a cycle, a function) or one over maxResultBytes is FAILED at once, as the
   * same work would give the same result. The handler has run, so a write Redis refuses must
   * not turn into a retryable failure: the scheduler would run the job a second time. The write
   * is retried (backoff 100 ms to 2 s) for up to resultWriteBudgetMs, or until the job is
   * cancelled or stop()'s deadline comes (the try then in progress, or the next, is the last);
   * past that the job is FAILED `result_write_failed`: it ran, its result is lost.
   */
  private async store(job: RunningJob, outcome: JobOutcome): Promise<Reply> {
    const reply: Reply = { status: outcome.status, resultPtr: '', errorCode: outcome.errorCode ?? '', errorMessage: outcome.errorMessage ?? '' };
    if (outcome.result === undefined) return reply;
    /**
     * A result that cannot be stored fails a SUCCEEDED outcome. A failure the handler reported
     * (FAILED_RETRYABLE: it asked for another attempt; FAILED, CANCELLED) keeps its status, code
     * and message, without the result (P317): a Redis blip or an oversized diagnostic made a retry
     * request a final failure, and hid the handler's own reason.
     */
    const unstored = (errorCode: string, errorMessage: string): Reply => {
      if (outcome.status === 'SUCCEEDED') return { status: 'FAILED', errorCode, errorMessage };
      this.log.warn("the handler's result for its failure was not stored; its status and reason are sent without it", { job_id: job.request.jobId, status: outcome.status, code: errorCode, err: errorMessage });
      return reply;
    };
    const s = serialise(outcome.result);
    if (!s.ok && s.tooLarge) return unstored('result_too_large', `the handler's result is over maxResultBytes ${this.maxResultBytes}: ${s.why}; store large outputs elsewhere and return their address`);
    if (!s.ok) return unstored('result_not_serialisable', `the handler's result cannot be stored as JSON: ${s.why}`);
    const over = utf8Over(s.json, this.maxResultBytes);
    if (over !== null) {
      return unstored('result_too_large', `the handler's result is at least ${over} bytes of JSON, over maxResultBytes ${this.maxResultBytes}; store large outputs elsewhere and return their address`);
    }
    const deadline = performance.now() + this.resultWriteBudgetMs;
    for (let wait = 100, tries = 1; ; wait = Math.min(2 * wait, 2_000), tries++) {
      // The budget bounds when the last try may begin, not when a try fails: a try begun inside
      // it that fails after it (the process was frozen mid-write past the budget, and its
      // command timed out on waking) gets one more try.
      const begun = performance.now();
      if (job.abandoned) return { status: 'FAILED', errorCode: 'worker_shutdown', errorMessage: 'abandoned at stop' }; // never published
      if (job.cancelled) return CANCELLED_REPLY; // the job is over: nobody will read this result
      try {
        reply.resultPtr = await this.io.writeResult(job.request.jobId, s.json);
        if (tries > 1) this.log.info('result written after retries', { job_id: job.request.jobId, tries });
        return reply;
      } catch (err) {
        const message = redisErrorText(err);
        if (isRedisUnavailable(err)) this.redisLost(message);
        if (job.cancelled && !job.abandoned) {
          this.log.warn('result write failed and the job was cancelled meanwhile: not retried', { job_id: job.request.jobId, tries, err: message });
          return CANCELLED_REPLY;
        }
        if (job.abandoned || job.finishing || begun >= deadline) {
          if (outcome.status !== 'SUCCEEDED') return unstored('result_write_failed', message);
          this.log.error('result write failed; the job ran, reporting it FAILED', { job_id: job.request.jobId, tries, err: message });
          return { status: 'FAILED', errorCode: 'result_write_failed', errorMessage: `worker ${this.workerId} could not store the result in Redis: ${message}` };
        }
        if (tries === 1) this.log.warn('result write failed, retrying', { job_id: job.request.jobId, err: message });
        await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadline - performance.now()))));
      }
    }
  }

  private count(status: ResultStatus): void {
    const field = ({ SUCCEEDED: 'succeeded', FAILED: 'failed', FAILED_RETRYABLE: 'retryable', CANCELLED: 'cancelled' } as const)[status];
    this.counters[field] += 1;
    this.metrics?.jobs.inc({ status });
  }

  /**
   * Every JobResult goes out here: counted by status as it is answered (one whose publish is
   * given up is counted in resultPublishFailures too), its error cut to the job store's bounds (P73).
   */
  private async answer(request: JobRequest, traceId: string, executionMs: number, reply: Reply): Promise<void> {
    this.count(reply.status);
    await this.publishResult(request, traceId, executionMs, {
      ...reply,
      errorCode: bounded(reply.errorCode ?? '', MAX_ERROR_CODE_CHARS),
      errorMessage: bounded(reply.errorMessage ?? '', MAX_ERROR_MESSAGE_CHARS),
    });
  }

  /**
   * JetStream publish with the D9 msg id; retried with the same id so a lost ack never doubles a
   * result. A JobResult is the only word the scheduler gets that a job ran (or was refused after
   * its claim), so it is retried while NATS is away for up to resultPublishBudgetMs, not a fixed
   * 5 tries (≈ 16 s): a job that ended during a longer outage would otherwise end TIMEOUT with
   * its result stored, and be run again from the DLQ (P157). Once stop() is called, a publish
   * gives up at its deadline (after at least PUBLISH_TRIES tries). True when published.
   */
  private async publishResult(request: JobRequest, traceId: string, executionMs: number, reply: Reply): Promise<boolean> {
    const dispatchId = request.dispatch?.dispatchId ?? '';
    let data: Uint8Array;
    try {
      data = resultPacket({
        workerId: this.workerId, traceId, jobId: request.jobId, status: reply.status, resultPtr: reply.resultPtr ?? '',
        executionMs, errorCode: reply.errorCode ?? '', errorMessage: reply.errorMessage ?? '', dispatch: request.dispatch,
      }, this.encode);
    } catch (err) {
      this.counters.resultPublishFailures += 1;
      this.log.error('result not encodable, the scheduler timeout is the backstop', { job_id: request.jobId, dispatch_id: dispatchId, status: reply.status, err: thrownMessage(err) });
      return false;
    }
    const deadline = performance.now() + this.resultPublishBudgetMs;
    const log = { job_id: request.jobId, dispatch_id: dispatchId, status: reply.status };
    for (let tryNo = 1; ; tryNo += 1) {
      try {
        await this.o.bus.publish(subjects.result, data, { msgId: resultMsgId(request.jobId, dispatchId) });
        if (tryNo >= PUBLISH_TRIES) this.log.info('result published after retries', { ...log, tries: tryNo });
        else this.log.debug('result published', log);
        return true;
      } catch (err) {
        if (tryNo >= PUBLISH_TRIES && performance.now() >= Math.min(deadline, this.publishCutoff)) {
          this.counters.resultPublishFailures += 1;
          this.log.error('result publish failed, the scheduler timeout is the backstop', { ...log, tries: tryNo, err: (err as Error).message });
          return false;
        }
        if (tryNo === PUBLISH_TRIES) this.log.warn('result publish failing, still retrying', { ...log, tries: tryNo, budget_ms: this.resultPublishBudgetMs, err: (err as Error).message });
        await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** tryNo, PUBLISH_MAX_WAIT_MS)));
      }
    }
  }

  /**
   * P337: a handler's `progress()`, at most one packet a job every PROGRESS_MIN_INTERVAL_MS. Each
   * packet costs a scheduler's Redis write and every gateway's verification and fan-out, and a
   * handler reporting per token or per item sent hundreds a second. A call inside the interval
   * only updates the value; the last one goes out when the interval ends (and every heartbeat's
   * keep-alive repeats it), so the latest progress is never lost, only the ones in between.
   */
  private handlerProgress(job: RunningJob, p: unknown): void {
    if (job.closed || job.cancelled) return;
    try {
      if (p !== undefined && p !== null) job.lastProgress = normaliseProgress(p);
    } catch (err) {
      this.log.warn('progress not sent', { job_id: job.request.jobId, err: thrownMessage(err) });
      return;
    }
    const wait = (job.progressSentAt ?? -Infinity) + PROGRESS_MIN_INTERVAL_MS - performance.now();
    if (wait <= 0) return this.sendProgress(job);
    job.progressTimer ??= setTimeout(() => {
      job.progressTimer = undefined;
      this.sendProgress(job);
    }, wait);
  }

  /**
   * A progress packet with the handler's latest value (handlerProgress keeps it: percent an
   * integer 0-100), for the handler's progress(), the start ack and the heartbeat keep-alive alike.
   * Never throws: it runs in the handler's call and on timers.
   */
  private sendProgress(job: RunningJob): void {
    // Nothing for a job whose handler settled (its result is on the way) or that heard its cancel,
    // from the handler, the heartbeat keep-alive or the start ack alike: a progress naming an
    // attempt that has ended makes the schedulers send its JobCancel again (P127), which only a
    // worker that never heard it needs.
    if (job.closed || job.cancelled) return;
    // Any progress is also the start ack.
    clearTimeout(job.ackTimer);
    job.ackTimer = undefined;
    clearTimeout(job.progressTimer);
    job.progressTimer = undefined;
    job.progressSentAt = performance.now();
    try {
      this.publishCore(subjects.progress, progressPacket({ workerId: this.workerId, traceId: job.traceId, jobId: job.request.jobId, dispatch: job.request.dispatch, ...(job.lastProgress ?? {}) }, this.encode));
    } catch (err) {
      this.log.warn('progress not sent', { job_id: job.request.jobId, err: thrownMessage(err) });
    }
  }

  private onCancel(data: Uint8Array): void {
    let packet;
    try {
      packet = this.decode(data);
    } catch (err) {
      // P220: dropped without a word, a cancel this worker cannot verify (a gateway without the
      // signing key, with workers that verify) left the job running until a signed resend. Counted
      // with the bad packets, and logged once a minute per reason.
      this.counters.badPackets += 1;
      const error = (err as Error).message;
      if (this.mayLogCancelDrop(error)) {
        this.log.warn('dropping a job cancel this worker cannot decode or verify', { subject: subjects.cancel, bytes: data.length, err: error });
      }
      return;
    }
    if (packet.payload.case !== 'jobCancel') return;
    const cancel = packet.payload.value;
    for (const claim of this.claiming.values()) {
      if (!cancelNames(cancel, claim.request) || claim.cancelled) continue;
      claim.cancelled = true;
      this.log.info('job cancel received', { job_id: cancel.jobId, reason: cancel.reason, before: 'claim' });
    }
    for (const job of this.running.values()) {
      if (!cancelNames(cancel, job.request)) continue;
      if (job.cancelled) continue;
      job.cancelled = true;
      this.log.info('job cancel received', { job_id: cancel.jobId, reason: cancel.reason });
      job.controller.abort(new WorkerError('job_cancelled', `cancelled: ${cancel.reason}`));
      this.startGrace(job);
    }
  }

  /** The handler has `cancelGraceMs` from its cancel or abandon to settle; then its slot is taken back. */
  private startGrace(job: RunningJob): void {
    if (job.graceTimer !== undefined || (job.closed && !job.abandoned)) return;
    job.graceTimer = setTimeout(job.onStuck, this.cancelGraceMs);
    job.graceTimer.unref();
  }

  /**
   * The handler ignored its signal past the grace: the job leaves `running` (heartbeats stop
   * counting it, its slot takes a new job). Its claim stays, so its dispatch never runs again
   * here or elsewhere; the handler itself runs on, out of our hands.
   */
  private takeBack(job: RunningJob): void {
    this.free(job);
    this.counters.stuckReleased += 1;
    this.metrics?.stuck.inc();
    this.log.error('handler did not settle after its cancel; slot taken back', {
      job_id: job.request.jobId, dispatch_id: job.request.dispatch?.dispatchId, attempt: Number(job.request.dispatch?.attempt ?? 0n),
      after: job.abandoned ? 'stop deadline' : 'cancel', cancel_grace_ms: this.cancelGraceMs, active_jobs: this.running.size,
    });
  }

  private free(job: RunningJob): void {
    if (this.running.get(job.key) !== job) return;
    this.running.delete(job.key);
    this.metrics?.active.dec();
  }

  /** The heartbeat timer's work; a timer callback must not throw (an uncaught exception ends the process). */
  private tick(withHandshake: boolean): void {
    try {
      if (withHandshake) this.sendHandshake();
      this.beat();
      this.checkRedis();
    } catch (err) {
      this.log.error('heartbeat tick failed', { err: thrownMessage(err) });
    }
  }

  /**
   * The heartbeat says draining (WORKER_DRAINING_LABEL, P69) while the worker stops, and while it
   * cannot reach Redis: schedulers route no job to it then (each would be answered
   * worker_redis_unavailable and spend an attempt). Running jobs get their keep-alive progress.
   */
  private beat(o: { stopping?: boolean } = {}): void {
    try {
      const draining = o.stopping === true || !this.redisUp;
      const labels = draining ? { ...(this.o.labels ?? {}), [WORKER_DRAINING_LABEL]: 'true' } : (this.o.labels ?? {});
      // Each heartbeat's created_at is later than the last one's: a verifying scheduler ignores one
      // that is not (P243), and two can fall in one millisecond (a tick, then the stop's).
      this.lastBeatMs = Math.max(Date.now(), this.lastBeatMs + 1);
      this.publishCore(
        subjects.heartbeat,
        heartbeatPacket({
          workerId: this.workerId, pool: this.o.pool, activeJobs: this.running.size, maxParallelJobs: this.o.maxParallelJobs,
          cpuLoad: cpuLoadPct(), memoryLoad: memoryLoadPct(), capabilities: this.o.capabilities ?? this.o.topics, labels, sentAtMs: this.lastBeatMs,
        }, this.encode),
      );
    } catch (err) {
      this.log.warn('heartbeat not sent', { err: thrownMessage(err) });
    }
    if (o.stopping) return;
    // D40: progress every heartbeat keeps long jobs visibly alive for the reconciler (not the
    // settled or cancelled ones: sendProgress).
    for (const job of this.running.values()) this.sendProgress(job);
  }

  /** Null when Redis answers PING within a second, else why not (readable: no ioredis option names). */
  private async pingRedis(): Promise<string | null> {
    const reply = Promise.resolve().then(() => this.o.redis.ping());
    reply.catch(() => undefined);
    try {
      const r = await replyWithin(reply, REDIS_PING_TIMEOUT_MS, `no PING reply within ${REDIS_PING_TIMEOUT_MS} ms`);
      return r === 'PONG' ? null : `PING answered ${render(r, 100)}`;
    } catch (err) {
      return redisErrorText(err);
    }
  }

  /** start(): resolves true once Redis answers, false if stop() was called first. */
  private async waitForRedis(): Promise<boolean> {
    const since = Date.now();
    let noticeAt = since + REDIS_WAIT_NOTICE_MS;
    let noticed = false;
    for (;;) {
      // A client closed for good (the runtime's close()) never answers again: waiting would hang start() (P218).
      if ((this.o.redis as { status?: string }).status === 'end') throw new WorkerError('worker_state', `start() on a closed Redis client: the worker runtime was closed; connect a new one with connectWorkerRuntime`);
      const err = await this.pingRedis();
      if (this.state !== 'starting') return false;
      if (err === null) {
        if (noticed) this.log.info('worker: Redis reachable, starting', { waited_ms: Date.now() - since });
        return true;
      }
      if (Date.now() >= noticeAt) {
        this.log.warn('worker: Redis not reachable at start, waiting for it', { err: `worker ${this.workerId} cannot reach Redis: ${err}` });
        noticed = true;
        noticeAt = Date.now() + REDIS_WAIT_REPEAT_MS;
      }
      await new Promise((r) => setTimeout(r, REDIS_WAIT_RETRY_MS));
      if (this.state !== 'starting') return false;
    }
  }

  /**
   * One PING per heartbeat: a worker that lost Redis says draining until it answers again. Two
   * failed PINGs in a row mean lost (a claim, input read or result write that finds Redis
   * unreachable means it at once); one answered PING means back.
   */
  private checkRedis(): void {
    if (this.redisCheck !== null || this.state !== 'running') return;
    this.redisCheck = this.pingRedis().then((err) => {
      this.redisCheck = null;
      if (err === null) {
        this.pingFailures = 0;
        this.redisBack();
      } else if (++this.pingFailures >= 2) {
        this.redisLost(err);
      }
    });
  }

  private redisLost(err: string): void {
    if (!this.redisUp) return;
    this.redisUp = false;
    this.redisDownSince = Date.now();
    this.log.error('worker cannot reach Redis; heartbeats say draining until it answers', { err: `worker ${this.workerId} cannot reach Redis: ${err}` });
    if (this.state === 'running') this.beat();
  }

  private redisBack(): void {
    if (this.redisUp) return;
    this.redisUp = true;
    this.log.info('worker reaches Redis again; taking jobs', { down_ms: Date.now() - this.redisDownSince });
    if (this.state === 'running') this.beat();
  }

  private sendHandshake(): void {
    try {
      const readyTopics = this.directSubject ? [...this.o.topics, this.directSubject] : [...this.o.topics];
      this.publishCore(subjects.handshake, handshakePacket({ workerId: this.workerId, readyTopics, sdkVersion: this.o.sdkVersion ?? SDK_VERSION }, this.encode));
    } catch (err) {
      this.log.warn('handshake not sent', { err: thrownMessage(err) });
    }
  }

  /** Tells every process on our direct subject that this one is there (see INSTANCE_MARKER). */
  private announceInstance(): void {
    if (this.directSubject === null || this.state !== 'running') return;
    this.publishCore(instanceSubjectFor(this.o.workerId), Buffer.concat([INSTANCE_MARKER, Buffer.from(this.instance, 'utf8')]));
  }

  private onInstanceMarker(data: Uint8Array): void {
    const other = Buffer.from(data.buffer, data.byteOffset, data.byteLength).subarray(INSTANCE_MARKER.length).toString('utf8').slice(0, 64);
    if (other === this.instance || this.otherInstances.has(other)) return;
    if (this.otherInstances.size >= MAX_OTHER_INSTANCES) {
      // Past the bound a process is neither remembered nor answered: two full processes answering
      // each other's markers would do so for ever, a storm on every process of the id (P159).
      // Every process announces itself at start, so the others still hear of it.
      if (!this.instancesOverflowed) {
        this.instancesOverflowed = true;
        this.log.warn(`more than ${MAX_OTHER_INSTANCES} other processes run with this worker id; further ones are not reported`, { direct_subject: this.directSubject, instance: this.instance });
      }
      return;
    }
    this.otherInstances.add(other);
    this.log.warn('another process runs with this worker id: worker ids must be unique', { direct_subject: this.directSubject, instance: this.instance, other_instance: other });
    // Once per process heard: the other one learns of us too, and the exchange ends there.
    this.announceInstance();
  }

  /** Broadcasts are fire-and-forget with self-healing repeats; a failed one is logged, never thrown. */
  private publishCore(subject: string, data: Uint8Array): void {
    try {
      this.o.bus.publishCore(subject, data);
    } catch (err) {
      this.log.warn('core publish failed', { subject, err: (err as Error).message });
    }
  }
}

/** worker-sdk's own subject for the instance announcement (INSTANCE_MARKER), beside the direct one. */
function instanceSubjectFor(workerId: string): string {
  return `worker.${workerId}.instance`;
}

function isInstanceMarker(data: Uint8Array): boolean {
  return data.byteLength > INSTANCE_MARKER.length && Buffer.from(data.buffer, data.byteOffset, INSTANCE_MARKER.length).equals(INSTANCE_MARKER);
}

/**
 * The handler's outcome, each field read once, here (P137): a getter that throws (a lazily
 * computed or ORM-style object) is a handler fault answered FAILED, not a rejection that leaves
 * the job without a result, and a getter is not asked twice for a value it could answer
 * differently the second time.
 */
function readOutcome(o: unknown): { ok: true; outcome: JobOutcome } | { ok: false; problem: string } {
  const problem = (text: string) => ({ ok: false as const, problem: text });
  try {
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return problem(`the handler resolved to ${render(o, 200)}`);
    const { status, errorCode, errorMessage, result } = o as Record<string, unknown>;
    if (!OUTCOME_STATUSES.has(status)) return problem(`the handler resolved to status ${render(status, 100)}`);
    if (errorCode !== undefined && errorCode !== null && typeof errorCode !== 'string') return problem(`the handler's errorCode is ${render(errorCode, 100)}, not a string`);
    if (errorMessage !== undefined && errorMessage !== null && typeof errorMessage !== 'string') return problem(`the handler's errorMessage is ${render(errorMessage, 100)}, not a string`);
    return { ok: true, outcome: { status: status as JobOutcome['status'], result, errorCode: handlerCode(errorCode ?? undefined), errorMessage: errorMessage ?? undefined } };
  } catch (err) {
    return problem(`the handler's outcome cannot be read (${thrownMessage(err)})`);
  }
}

/** Whether the cancel is for this request: its job, and its dispatch when the cancel names one (one without applies to every attempt). */
function cancelNames(cancel: JobCancel, request: JobRequest): boolean {
  return cancel.jobId === request.jobId && (!cancel.dispatch?.dispatchId || cancel.dispatch.dispatchId === (request.dispatch?.dispatchId ?? ''));
}

/**
 * The codes the worker answers with itself, before or instead of running the handler. The
 * scheduler reads `worker_busy` as a refusal before the attempt started (D48: not counted against
 * max_retries, up to 20 more tries), so a handler's own must not say it: a handler that ran and
 * answered FAILED_RETRYABLE `worker_busy` was run up to 21 times whatever max_retries said (P178).
 */
const RESERVED_CODES: ReadonlySet<string> = new Set(['worker_busy', 'worker_shutdown', 'worker_redis_unavailable']);

/** A handler's error code, `handler_`-prefixed when it is one the worker reserves for its own answers. */
function handlerCode(code: string | undefined): string | undefined {
  return code !== undefined && RESERVED_CODES.has(code) ? `handler_${code}` : code;
}

function errorCodeOf(err: unknown): string {
  try {
    const code = (err as { code?: unknown } | null)?.code;
    return typeof code === 'string' && code.length > 0 ? (handlerCode(code) as string) : 'handler_error';
  } catch {
    return 'handler_error';
  }
}

export function createWorker(o: WorkerOptions): Worker {
  return new CapWorker(o);
}
