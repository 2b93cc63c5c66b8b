import type { ConsumerBacklog } from '@cordum/bus';
import { valueWithin } from '@cordum/service-kit';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export const LOCK_WAIT_HISTOGRAM = 'cordum_scheduler_job_lock_wait_seconds';

/**
 * Buckets of the job path's latency histograms: fine below 30 ms, where a healthy stack's
 * dispatch lives (docs/performance.md), so histogram_quantile can tell 2 ms from 5 ms.
 */
export const JOB_PATH_BUCKETS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface SchedulerMetrics {
  jobsTotal: Counter<'state'>;
  dispatchLatency: Histogram;
  intakeWait: Histogram;
  ignored: Counter<'kind' | 'reason'>;
  decodeErrors: Counter<'subject'>;
  staleJobs: Gauge;
  /** P34: live workers this replica routes around because a dispatch to them went unclaimed. */
  workersUnclaimed: Gauge;
  /** The submit consumer's undelivered and unacked messages, read from NATS at each scrape. */
  submitBacklog: Gauge<'kind'>;
  orphanReplayed: Counter<'reason'>;
  verify: Counter<'outcome'>;
  reconciled: Counter<'action'>;
  /** JobCancels from sys.job.cancel that cancelled a job here (not one the gateway had already cancelled). */
  cancelsApplied: Counter;
  /** P127: JobCancels sent again to a worker whose progress named an attempt that has ended. */
  endedAttemptCancels: Counter;
  /** P134/P135: owed JobCancels (job:cancel:outbox), by outcome: the replayer leader's sends and drops, and the attempts' answers. */
  owedCancels: Counter<'outcome'>;
  /** P130: submits NAKed on their last delivery, filed in job:retry for the replayer instead. */
  lastDeliveryHandOffs: Counter;
  backpressure: Counter;
  capacityHandOffs: Counter;
  /** P131: retries the policy stopped at their re-check (the job FAILED), by decision. */
  retriesStopped: Counter<'decision'>;
  /** P70: a job found its concurrency group's slots taken and waits (one count per look). */
  slotWaits: Counter;
  /** P255: looks at a job that found no worker (D13), by the topic's pools and the wait's reason. */
  workerWaits: Counter<'pools' | 'reason'>;
  /** P255: jobs ended FAILED no_workers at the D13 bound, by the topic's pools and the last wait's reason. */
  noWorkersFailed: Counter<'pools' | 'reason'>;
  /** P70: waiting jobs the replayer leader re-drove because a slot of their group freed. */
  slotWakes: Counter;
  /** P70: waiting jobs driven at once by the replica whose result freed a slot of their group. */
  slotHandOffs: Counter;
  reconcileScans: Counter;
  /** P244: live jobs whose lifetime the keeper renewed (leader only). */
  lifetimesRenewed: Counter;
  /** D21 breaker as this replica last saw it: 0 closed, 1 half-open, 2 open. */
  breakerState: Gauge;
  breakerTransitions: Counter<'to'>;
  safetyChecks: Counter<'outcome'>;
  /** 1 for the fail modes this replica applies (the `scheduler` section, its absent fields from env). */
  failModeInfo: Gauge<'input' | 'output'>;
  safetyCheckDuration: Histogram;
  failOpen: Counter;
}

/** What some gauges read at each scrape. */
export interface ScrapeSources {
  /** `cordum_scheduler_workers_unclaimed`. */
  unclaimedWorkers(): number;
  /** `cordum_scheduler_submit_backlog`; null (no bus yet) or a throw (NATS down) leaves the gauge without series. */
  submitBacklog(): Promise<ConsumerBacklog | null>;
}

/** How long a scrape waits for the submit consumer's backlog. */
const BACKLOG_SCRAPE_BUDGET_MS = 1_000;

const NO_SOURCES: ScrapeSources = { unclaimedWorkers: () => 0, submitBacklog: () => Promise.resolve(null) };

export function createSchedulerMetrics(registry: Registry, sources: ScrapeSources = NO_SOURCES): SchedulerMetrics {
  return {
    jobsTotal: new Counter({ name: 'cordum_jobs_total', help: 'Committed job transitions by target state.', labelNames: ['state'], registers: [registry] }),
    dispatchLatency: new Histogram({
      name: 'cordum_scheduler_dispatch_latency_seconds',
      help: "Submit (job created, or approved for a held job) to its first attempt's dispatch published.",
      buckets: JOB_PATH_BUCKETS,
      registers: [registry],
    }),
    intakeWait: new Histogram({
      name: 'cordum_scheduler_intake_wait_seconds',
      help: "Job created (at the gateway; approved, for a held job) to this scheduler starting on its submit, first delivery only: the gateway's publish, the bus and this replica's backlog.",
      buckets: JOB_PATH_BUCKETS,
      registers: [registry],
    }),
    ignored: new Counter({
      name: 'cordum_scheduler_ignored_packets_total',
      help: 'Packets the scheduler acked without effect (stale dispatch, terminal job, unknown job, unmapped status; a submit of a RETRYING job whose retry is not due, retry_not_due).',
      labelNames: ['kind', 'reason'],
      registers: [registry],
    }),
    decodeErrors: new Counter({ name: 'cordum_scheduler_decode_errors_total', help: 'Undecodable packets by subject.', labelNames: ['subject'], registers: [registry] }),
    staleJobs: new Gauge({ name: 'cordum_scheduler_stale_jobs', help: 'DISPATCHED/RUNNING jobs past their timeout found by the last reconciler scan.', registers: [registry] }),
    workersUnclaimed: new Gauge({
      name: 'cordum_scheduler_workers_unclaimed',
      help: 'Live workers this replica routes around while others have room: a dispatch to them went unclaimed and they have not answered one since (P34).',
      registers: [registry],
      collect() {
        this.set(sources.unclaimedWorkers());
      },
    }),
    submitBacklog: new Gauge({
      name: 'cordum_scheduler_submit_backlog',
      help: "Submits waiting for the schedulers (kind=undelivered: still in the stream; unacked: taken by a replica and not done). Read from the shared consumer at each scrape, so every replica reports the same figure.",
      labelNames: ['kind'],
      registers: [registry],
      async collect() {
        this.reset();
        // A NATS that does not answer (frozen, electing) must not hold up the scrape for the
        // JetStream request timeout (5 s): past BACKLOG_SCRAPE_BUDGET_MS the gauge has no series.
        const b = await valueWithin(sources.submitBacklog(), BACKLOG_SCRAPE_BUDGET_MS);
        if (!b) return;
        this.set({ kind: 'undelivered' }, b.undelivered);
        this.set({ kind: 'unacked' }, b.unacked);
      },
    }),
    orphanReplayed: new Counter({
      name: 'cordum_scheduler_orphan_replayed_total',
      help: 'Jobs re-driven by the pending replayer (reason: lost = PENDING/SCHEDULED past the bound, retry = due job:retry entry).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    verify: new Counter({ name: 'cordum_dispatch_verify_total', help: 'Dispatch delivery verification outcomes (delivered, fallback, deferred, unverified, probe_error; skipped: dropped unrun from a full probe queue).', labelNames: ['outcome'], registers: [registry] }),
    lifetimesRenewed: new Counter({
      name: 'cordum_scheduler_job_lifetimes_renewed_total',
      help: 'Live jobs with less than half of JOB_TTL left that the lifetime keeper gave another JOB_TTL (leader only; P244).',
      registers: [registry],
    }),
    reconcileScans: new Counter({ name: 'cordum_scheduler_reconcile_scans_total', help: 'Reconciler scans run by this replica (leader only); its rate shows the live scan_interval.', registers: [registry] }),
    cancelsApplied: new Counter({
      name: 'cordum_scheduler_cancels_applied_total',
      help: 'JobCancels on sys.job.cancel that found the job live and cancelled it here; a cancel the gateway already wrote is counted as ignored (kind cancel, reason terminal).',
      registers: [registry],
    }),
    backpressure: new Counter({
      name: 'cordum_scheduler_backpressure_total',
      help: 'Looks at a job that found every worker able to run it at capacity (D48, ≥ 90 % of max_parallel_jobs): the job waits, NAKed 250 ms or filed in job:retry; not a try. A steady rate means the topic needs more workers.',
      registers: [registry],
    }),
    capacityHandOffs: new Counter({
      name: 'cordum_scheduler_capacity_hand_offs_total',
      help: 'Jobs that waited for worker capacity (D48) driven at once by a result that freed a slot of a worker able to run them, instead of at their next redelivery or replayer turn (P225).',
      registers: [registry],
    }),
    lastDeliveryHandOffs: new Counter({
      name: 'cordum_scheduler_last_delivery_hand_offs_total',
      help: 'Submits whose last JetStream delivery would have been NAKed (workers at capacity, the kernel down, the job lock busy): filed in job:retry for the replayer leader instead of waiting to be found as orphans (P130).',
      registers: [registry],
    }),
    retriesStopped: new Counter({
      name: 'cordum_scheduler_retries_stopped_total',
      help: 'RETRYING jobs the safety kernel did not allow another attempt at the re-check before it (decision deny or require_human): ended FAILED policy_denied or approval_required (P131).',
      labelNames: ['decision'],
      registers: [registry],
    }),
    endedAttemptCancels: new Counter({
      name: 'cordum_scheduler_ended_attempt_cancels_total',
      help: 'JobCancels sent to a worker whose progress named an attempt that has ended (the job terminal, or its attempt replaced): the first cancel did not reach it (P127).',
      registers: [registry],
    }),
    owedCancels: new Counter({
      name: 'cordum_scheduler_owed_cancels_total',
      help: 'JobCancels owed to workers (job:cancel:outbox, P134/P135), by outcome: sent by the replayer leader (its writer did not send it in time, or it is sent again because the attempt has not answered), failed (tried again in 5 s), not_needed (the job was not CANCELLED or TIMEOUT: its cancel was never written, or it had ended otherwise), or answered (the attempt\'s worker answered, so it is no longer sent).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    slotWaits: new Counter({
      name: 'cordum_scheduler_slot_waits_total',
      help: 'Looks at a job allowed with max_concurrent_jobs that found every slot of its group (tenant and rule) taken, so the job waits (P70).',
      registers: [registry],
    }),
    workerWaits: new Counter({
      name: 'cordum_scheduler_worker_waits_total',
      help: "Looks at a job that found no worker to run it (D13; each is a schedule try and the job waits), by its topic's pools (comma-joined as configured; empty for a topic no pool maps) and reason: no_worker_for_topic, workers_draining, no_matching_worker (workers serve the topic but none meets the job's requires or placement labels), workers_not_listening (workers of its pools are live but none names the topic in its handshake, P261) (P255).",
      labelNames: ['pools', 'reason'],
      registers: [registry],
    }),
    noWorkersFailed: new Counter({
      name: 'cordum_scheduler_no_workers_failed_total',
      help: "Jobs ended FAILED no_workers because no worker came within the D13 bound, by their topic's pools (as in cordum_scheduler_worker_waits_total) and the last look's reason (P255).",
      labelNames: ['pools', 'reason'],
      registers: [registry],
    }),
    slotWakes: new Counter({
      name: 'cordum_scheduler_slot_wakes_total',
      help: 'Waiting jobs re-driven by the replayer leader because a slot of their concurrency group freed (P70).',
      registers: [registry],
    }),
    slotHandOffs: new Counter({
      name: 'cordum_scheduler_slot_hand_offs_total',
      help: 'Waiting jobs driven at once by the replica whose result, cancel or timeout freed a slot of their concurrency group, ahead of the leader (P70).',
      registers: [registry],
    }),
    reconciled: new Counter({ name: 'cordum_scheduler_reconciled_total', help: 'Reconciler actions: dispatch_timeout, running_timeout, deadline_exceeded, max_runtime_exceeded (ended TIMEOUT or FAILED), approval_expired (DENIED), redispatch, republish, running; timeout_deferred: a TIMEOUT put off to a later scan while a replica holds results unacknowledged since before the bound passed (P227).', labelNames: ['action'], registers: [registry] }),
    breakerState: new Gauge({ name: 'cordum_scheduler_safety_breaker_state', help: 'Safety kernel circuit breaker (shared in Redis) as last seen by this replica, at a check or its re-read every 5 s: 0 closed, 1 half-open, 2 open.', registers: [registry] }),
    breakerTransitions: new Counter({ name: 'cordum_scheduler_safety_breaker_transitions_total', help: 'Breaker transitions this replica caused (to = open | closed).', labelNames: ['to'], registers: [registry] }),
    failModeInfo: new Gauge({
      name: 'cordum_scheduler_fail_mode_info',
      help: 'The fail modes this replica applies (input, output), 1; a field absent from the config section comes from the replica\'s env (SCHEDULER_INPUT_FAIL_MODE, ...), which GET /api/v1/config/status does not compare',
      labelNames: ['input', 'output'],
      registers: [registry],
    }),
    safetyChecks: new Counter({
      name: 'cordum_scheduler_safety_checks_total',
      help: 'Check outcomes at the scheduler (allow, deny, require_human, throttle, unavailable, breaker_open, kernel_error: an error the kernel answered for the job, held in both fail modes).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    safetyCheckDuration: new Histogram({
      name: 'cordum_scheduler_safety_check_duration_seconds',
      help: 'Check round trips to the safety kernel as seen by the scheduler (calls refused by the breaker excluded).',
      buckets: JOB_PATH_BUCKETS,
      registers: [registry],
    }),
    failOpen: new Counter({ name: 'cordum_scheduler_safety_fail_open_total', help: 'Jobs allowed without a decision because the kernel was unavailable and input_fail_mode is open.', registers: [registry] }),
  };
}
