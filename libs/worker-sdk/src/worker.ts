// A CAP worker: queue-subscribes its topics, acks starts, runs each dispatch
// at most once (claim-2.lua) and reports results on JetStream (D1, D9, D40).
import { subjects, type Subscription } from '@cordum/bus';
import { WORKER_DRAINING_LABEL, packetDecoder, packetEncoder, type BusPacket, type DispatchIdentity, type JobRequest } from '@cordum/protocol';
import type { Logger } from '@cordum/service-kit';
import { performance } from 'node:perf_hooks';
import { WorkerError } from './errors';
import { InputError, JobIo } from './job-io';
import { directSubject as directSubjectFor } from './keys';
import { cpuLoadPct, memoryLoadPct } from './load';
import { WorkerMetrics } from './metrics';
import { handshakePacket, heartbeatPacket, progressPacket, resultMsgId, resultPacket, SDK_VERSION, type Encode, type ResultStatus } from './packets';
import type { JobOutcome, Worker, WorkerOptions, WorkerStats } from './types';

type LifecycleState = 'created' | 'running' | 'stopping' | 'stopped';

interface RunningJob {
  key: string;
  request: JobRequest;
  traceId: string;
  controller: AbortController;
  cancelled: boolean;
  /** stop() gave up on it and already answered FAILED_RETRYABLE for it. */
  abandoned: boolean;
  /** The pending start ack; cleared once any progress for the job went out or it ended. */
  ackTimer: NodeJS.Timeout | undefined;
  /** The handler's latest progress, repeated by each heartbeat's keep-alive (not reset to 0). */
  lastProgress?: { percent?: number; message?: string };
}

interface Reply {
  status: ResultStatus;
  resultPtr?: string;
  errorCode?: string;
  errorMessage?: string;
}

const SEEN_LIMIT = 10_000;
const PUBLISH_TRIES = 5;
export const DEFAULT_START_ACK_DELAY_MS = 100;
/** The scheduler's shortest SCHEDULER_DISPATCH_VERIFY_DELAY (BEHAVIOURS §3). */
const MAX_START_ACK_DELAY_MS = 1_000;
/**
 * The scheduler forgets a worker 30 s after its last heartbeat (CONTRACT §3, the worker TTL): a
 * period past a third of that lets one lost heartbeat drop a live worker from routing, and a
 * period past the TTL keeps it out for good (jobs stay PENDING with no error anywhere). A bound for
 * a deployment's settings (echo-worker's WORKER_HEARTBEAT_INTERVAL); the option itself is not
 * checked, so a test may quiet heartbeats down.
 */
export const MAX_HEARTBEAT_INTERVAL_MS = 10_000;

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
  private readonly metrics: WorkerMetrics | null;
  private readonly subs: Subscription[] = [];
  private cancelSub: Subscription | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Map<string, RunningJob>();
  /** Every admission in flight (claim, run, result publish), awaited by stop(). */
  private readonly inflight = new Set<Promise<void>>();
  /** Recently seen `<job_id>:<dispatch_id>`, insertion ordered, bounded. */
  private readonly seen = new Set<string>();
  private stopPromise: Promise<void> | null = null;
  private readonly counters: Omit<WorkerStats, 'activeJobs'> = {
    executed: 0, succeeded: 0, failed: 0, retryable: 0, cancelled: 0, rejectedBusy: 0,
    duplicates: 0, stale: 0, badPackets: 0, resultPublishFailures: 0,
  };

  constructor(private readonly o: WorkerOptions) {
    if (!o.workerId) throw new WorkerError('worker_invalid_options', 'workerId is required');
    if (o.topics.length === 0) throw new WorkerError('worker_invalid_options', 'at least one topic is required');
    if (!Number.isInteger(o.maxParallelJobs) || o.maxParallelJobs < 1) {
      throw new WorkerError('worker_invalid_options', `maxParallelJobs must be a positive integer, got ${o.maxParallelJobs}`);
    }
    const ackDelay = o.startAckDelayMs ?? DEFAULT_START_ACK_DELAY_MS;
    if (!Number.isInteger(ackDelay) || ackDelay < 0 || ackDelay > MAX_START_ACK_DELAY_MS) {
      throw new WorkerError('worker_invalid_options', `startAckDelayMs must be an integer from 0 to ${MAX_START_ACK_DELAY_MS}, got ${ackDelay}`);
    }
    this.startAckDelayMs = ackDelay;
    const budget = o.resultWriteBudgetMs ?? 30_000;
    if (!Number.isInteger(budget) || budget < 0) throw new WorkerError('worker_invalid_options', `resultWriteBudgetMs must be a non-negative integer, got ${budget}`);
    this.resultWriteBudgetMs = budget;
    this.workerId = o.workerId;
    this.directSubject = (o.directDispatch ?? true) ? directSubjectFor(o.workerId) : null;
    this.log = o.logger.child({ worker_id: o.workerId });
    this.io = new JobIo(o.redis, o.claimTtlMs ?? 7 * 24 * 3600_000);
    this.encode = packetEncoder(o.signingKey);
    this.decode = packetDecoder(o.verifyKey);
    this.metrics = o.registry ? new WorkerMetrics(o.registry) : null;
  }

  stats(): WorkerStats {
    return { activeJobs: this.running.size, ...this.counters };
  }

  async start(): Promise<void> {
    if (this.state !== 'created') throw new WorkerError('worker_state', `start() called in state ${this.state}`);
    this.state = 'running';
    const onRequest = (data: Uint8Array, subject: string): void => this.onRequest(data, subject);
    for (const topic of this.o.topics) this.subs.push(this.o.bus.subscribe(topic, onRequest, { queue: topic }));
    if (this.directSubject) this.subs.push(this.o.bus.subscribe(this.directSubject, onRequest));
    this.cancelSub = this.o.bus.subscribe(subjects.cancel, (data) => this.onCancel(data));
    this.sendHandshake();
    this.beat();
    // By default the handshake goes out with every heartbeat: a scheduler replica that started
    // after us (or reconnected) learns our direct subject and start acks in the same interval as
    // our heartbeat, not up to 30 s later; until then it dispatches to us by topic, unverified
    // (a dispatch lost then waits for the dispatch timeout instead of the verify delay).
    const hsEvery = this.o.handshakeIntervalMs;
    const hb = setInterval(() => {
      if (hsEvery === undefined) this.sendHandshake();
      this.beat();
    }, this.o.heartbeatIntervalMs ?? 5_000);
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
    this.log.info('worker started', { topics: this.o.topics, direct: this.directSubject, pool: this.o.pool, max_parallel_jobs: this.o.maxParallelJobs });
  }

  stop(): Promise<void> {
    this.stopPromise ??= this.shutdown();
    return this.stopPromise;
  }

  private async shutdown(): Promise<void> {
    const wasRunning = this.state === 'running';
    this.state = 'stopping';
    for (const t of this.timers) clearInterval(t);
    for (const s of this.subs.splice(0)) s.unsubscribe();
    if (wasRunning) {
      // Intake is closed: one last heartbeat says so, and schedulers stop routing here now rather
      // than when our heartbeats time out (a job redispatched off us must not come back).
      this.beat({ draining: true });
      await this.o.bus.flush().catch(() => undefined);
      const drained = await this.drain(this.o.stopTimeoutMs ?? 10_000);
      if (!drained) await this.abandonRunning();
    }
    this.cancelSub?.unsubscribe();
    this.cancelSub = null;
    this.state = 'stopped';
    this.log.info('worker stopped', { ...this.stats() });
  }

  /** Resolves true once nothing is in flight, false at the deadline. */
  private async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.inflight.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      let t: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (t = setTimeout(r, left)));
      await Promise.race([Promise.allSettled([...this.inflight]), timeout]);
      clearTimeout(t);
    }
    return true;
  }

  /**
   * Jobs still running at the stop deadline are answered FAILED_RETRYABLE so the
   * scheduler redispatches them at once (D1 c) instead of waiting for the timeout.
   */
  private async abandonRunning(): Promise<void> {
    const jobs = [...this.running.values()];
    this.log.warn('stop deadline reached, abandoning running jobs', { jobs: jobs.map((j) => j.request.jobId) });
    await Promise.all(
      jobs.map(async (job) => {
        job.abandoned = true;
        clearTimeout(job.ackTimer);
        job.controller.abort(new WorkerError('worker_stopped', 'worker stopping'));
        await this.publishResult(job.request, job.traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_shutdown', errorMessage: 'worker stopped before the job finished' });
      }),
    );
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
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
    const input = this.io.readInput(request.contextPtr);
    input.catch(() => undefined);
    // A request without a dispatch identity (an old scheduler) has nothing to fence on: the local check is all we do.
    if (dispatchId !== '') {
      let verdict;
      try {
        verdict = await this.io.claim(request.jobId, dispatchId, Number(request.dispatch?.attempt ?? 0n), this.workerId);
      } catch (err) {
        this.log.error('dispatch claim failed (redis)', { ...jobLog, err: (err as Error).message });
        await this.publishResult(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_redis_unavailable', errorMessage: (err as Error).message });
        return;
      }
      if (verdict !== 'claimed') {
        if (verdict === 'duplicate') this.counters.duplicates += 1;
        else this.counters.stale += 1;
        this.log.info('dispatch not run', { ...jobLog, verdict });
        return;
      }
    }
    if (this.state !== 'running') {
      await this.publishResult(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_shutdown', errorMessage: 'worker is stopping' });
      return;
    }
    // Refuse rather than queue: a queued job without a start ack would be redispatched elsewhere (D1 b).
    if (this.running.size >= this.o.maxParallelJobs) {
      this.counters.rejectedBusy += 1;
      this.log.warn('worker busy, job refused', { ...jobLog, active_jobs: this.running.size });
      await this.publishResult(request, traceId, 0, { status: 'FAILED_RETRYABLE', errorCode: 'worker_busy', errorMessage: `worker ${this.workerId} is at max_parallel_jobs ${this.o.maxParallelJobs}` });
      return;
    }
    await this.run(request, traceId, key, input);
  }

  private async run(request: JobRequest, traceId: string, key: string, input: Promise<unknown>): Promise<void> {
    const job: RunningJob = { key, request, traceId, controller: new AbortController(), cancelled: false, abandoned: false, ackTimer: undefined };
    this.running.set(key, job);
    this.metrics?.active.set(this.running.size);
    const startedAt = performance.now();
    try {
      // The start ack (D40). A job that ends within the delay reports its result instead: the
      // result moves the job on by itself, and the scheduler's verifier reads the claim (D1 b),
      // so the ack would only cost a bus message, a scheduler write and a broadcast (issue 7).
      if (this.startAckDelayMs === 0) this.sendProgress(job);
      else job.ackTimer = setTimeout(() => this.sendProgress(job), this.startAckDelayMs);
      let reply: Reply;
      try {
        const outcome = await this.execute(job, input);
        // stop() answered FAILED_RETRYABLE for it and another worker may be running it now: a late
        // result must not overwrite that attempt's res:<id> (res: is per job, not per attempt).
        if (job.abandoned) return;
        reply = job.cancelled ? { status: 'CANCELLED', errorCode: 'cancelled', errorMessage: 'job cancelled' } : await this.store(job, outcome);
      } catch (err) {
        reply = job.cancelled
          ? { status: 'CANCELLED', errorCode: 'cancelled', errorMessage: 'job cancelled' }
          : err instanceof InputError
            ? { status: err.code === 'context_unreadable' ? 'FAILED_RETRYABLE' : 'FAILED', errorCode: err.code, errorMessage: err.message }
            : { status: 'FAILED', errorCode: errorCodeOf(err), errorMessage: (err as Error)?.message ?? String(err) };
      }
      clearTimeout(job.ackTimer); // every outcome passes here: the catch above takes any failure
      if (job.abandoned) return; // stop() already answered for it
      this.count(reply.status);
      await this.publishResult(request, traceId, performance.now() - startedAt, reply);
    } finally {
      this.running.delete(key);
      this.metrics?.active.set(this.running.size);
    }
  }

  private async execute(job: RunningJob, pending: Promise<unknown>): Promise<JobOutcome> {
    const input = await pending;
    this.counters.executed += 1;
    return this.o.handler({
      request: job.request,
      input,
      signal: job.controller.signal,
      dispatchId: job.request.dispatch?.dispatchId ?? '',
      attempt: Number(job.request.dispatch?.attempt ?? 0n),
      progress: (p) => this.sendProgress(job, p),
    });
  }

  /**
   * Writes the handler's result at res:<id>. The handler has run, so a write Redis refuses must
   * not turn into a retryable failure: the scheduler would run the job a second time. The write
   * is retried (backoff 100 ms to 2 s) for up to resultWriteBudgetMs, or until stop() gives up
   * on the job; past that the job is FAILED `result_write_failed`: it ran, its result is lost.
   */
  private async store(job: RunningJob, outcome: JobOutcome): Promise<Reply> {
    let resultPtr = '';
    if (outcome.result !== undefined) {
      const deadline = Date.now() + this.resultWriteBudgetMs;
      for (let wait = 100, tries = 1; ; wait = Math.min(2 * wait, 2_000), tries++) {
        // The budget bounds when the last try may begin, not when a try fails: a try begun inside
        // it that fails after it (the process was frozen mid-write past the budget, and its
        // command timed out on waking) gets one more try.
        const begun = Date.now();
        if (job.abandoned) return { status: 'FAILED', errorCode: 'worker_shutdown', errorMessage: 'abandoned at stop' }; // never published
        try {
          resultPtr = await this.io.writeResult(job.request.jobId, outcome.result);
          if (tries > 1) this.log.info('result written after retries', { job_id: job.request.jobId, tries });
          break;
        } catch (err) {
          const message = (err as Error).message;
          if (job.abandoned || begun >= deadline) {
            this.log.error('result write failed; the job ran, reporting it FAILED', { job_id: job.request.jobId, tries, err: message });
            return { status: 'FAILED', errorCode: 'result_write_failed', errorMessage: message };
          }
          if (tries === 1) this.log.warn('result write failed, retrying', { job_id: job.request.jobId, err: message });
          await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadline - Date.now()))));
        }
      }
    }
    return { status: outcome.status, resultPtr, errorCode: outcome.errorCode ?? '', errorMessage: outcome.errorMessage ?? '' };
  }

  private count(status: ResultStatus): void {
    const field = ({ SUCCEEDED: 'succeeded', FAILED: 'failed', FAILED_RETRYABLE: 'retryable', CANCELLED: 'cancelled' } as const)[status];
    this.counters[field] += 1;
    this.metrics?.jobs.inc({ status });
  }

  /** JetStream publish with the D9 msg id; retried with the same id so a lost ack never doubles a result. */
  private async publishResult(request: JobRequest, traceId: string, executionMs: number, reply: Reply): Promise<void> {
    const dispatchId = request.dispatch?.dispatchId ?? '';
    const data = resultPacket({
      workerId: this.workerId, traceId, jobId: request.jobId, status: reply.status, resultPtr: reply.resultPtr ?? '',
      executionMs, errorCode: reply.errorCode ?? '', errorMessage: reply.errorMessage ?? '', dispatch: request.dispatch,
    }, this.encode);
    for (let tryNo = 1; ; tryNo += 1) {
      try {
        await this.o.bus.publish(subjects.result, data, { msgId: resultMsgId(request.jobId, dispatchId) });
        this.log.debug('result published', { job_id: request.jobId, dispatch_id: dispatchId, status: reply.status });
        return;
      } catch (err) {
        if (tryNo >= PUBLISH_TRIES) {
          this.counters.resultPublishFailures += 1;
          this.log.error('result publish failed, the scheduler timeout is the backstop', { job_id: request.jobId, dispatch_id: dispatchId, status: reply.status, err: (err as Error).message });
          return;
        }
        await new Promise((r) => setTimeout(r, 200 * 2 ** tryNo));
      }
    }
  }

  /** `p` from the handler is remembered; without it (start ack, heartbeat keep-alive) the last one is sent again. */
  private sendProgress(job: RunningJob, p?: { percent?: number; message?: string }): void {
    // Any progress is also the start ack.
    clearTimeout(job.ackTimer);
    job.ackTimer = undefined;
    if (p) job.lastProgress = { ...p };
    this.publishCore(subjects.progress, progressPacket({ workerId: this.workerId, traceId: job.traceId, jobId: job.request.jobId, dispatch: job.request.dispatch, ...(p ?? job.lastProgress ?? {}) }, this.encode));
  }

  private onCancel(data: Uint8Array): void {
    let packet;
    try {
      packet = this.decode(data);
    } catch {
      return; // cancels are broadcast to every worker; a bad one is someone else's problem too
    }
    if (packet.payload.case !== 'jobCancel') return;
    const cancel = packet.payload.value;
    for (const job of this.running.values()) {
      if (job.request.jobId !== cancel.jobId || !sameDispatch(cancel.dispatch, job.request.dispatch)) continue;
      if (job.cancelled) continue;
      job.cancelled = true;
      this.log.info('job cancel received', { job_id: cancel.jobId, reason: cancel.reason });
      job.controller.abort(new WorkerError('job_cancelled', `cancelled: ${cancel.reason}`));
    }
  }

  private beat(o: { draining?: boolean } = {}): void {
    const labels = o.draining ? { ...(this.o.labels ?? {}), [WORKER_DRAINING_LABEL]: 'true' } : (this.o.labels ?? {});
    this.publishCore(
      subjects.heartbeat,
      heartbeatPacket({
        workerId: this.workerId, pool: this.o.pool, activeJobs: this.running.size, maxParallelJobs: this.o.maxParallelJobs,
        cpuLoad: cpuLoadPct(), memoryLoad: memoryLoadPct(), capabilities: this.o.capabilities ?? this.o.topics, labels,
      }, this.encode),
    );
    if (o.draining) return;
    // D40: progress every heartbeat keeps long jobs visibly alive for the reconciler.
    for (const job of this.running.values()) this.sendProgress(job);
  }

  private sendHandshake(): void {
    const readyTopics = this.directSubject ? [...this.o.topics, this.directSubject] : [...this.o.topics];
    this.publishCore(subjects.handshake, handshakePacket({ workerId: this.workerId, readyTopics, sdkVersion: this.o.sdkVersion ?? SDK_VERSION }, this.encode));
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

/** A cancel without a dispatch identity applies to every attempt of the job. */
function sameDispatch(a: DispatchIdentity | undefined, b: DispatchIdentity | undefined): boolean {
  return !a?.dispatchId || a.dispatchId === (b?.dispatchId ?? '');
}

function errorCodeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length > 0 ? code : 'handler_error';
}

export function createWorker(o: WorkerOptions): Worker {
  return new CapWorker(o);
}
