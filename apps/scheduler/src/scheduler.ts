// Composition root: builds the graph, exposes start()/stop() (STYLE 2, 3, 4).
import { connectBus, subjects, type Bus, type Consumer, type Subscription } from '@cordum/bus';
import type { ConfigWatcher } from '@cordum/config-overlay';
import { createJobStore, createStateBroadcaster, dlqNotifier, type JobRecord, type JobStore, type StateBroadcaster } from '@cordum/job-store';
import { createLocks, type Locks } from '@cordum/locks';
import { decodeValidPacket, packetDecoder, packetEncoder, routeGrpcLogs } from '@cordum/protocol';
import { closeRedis, createRedis, isRedisUnavailable, isSlotMoving, pingRedis, redisLogEvents, startClockSync, warnIfEvicting, type ClockSync, type RedisClient } from '@cordum/redis';
import { clockOffsetGauge, sharedCheck, startHealthServer, type HealthServer, type Service, type ServiceDeps } from '@cordum/service-kit';
import type { SchedulerConfig } from './config';
import { createSchedulerConfigWatcher, schedulerSections } from './config-watch';
import { createLeaderLoop, type LeaderLoop } from './leader-loop';
import { reconcileOnce } from './reconciler';
import { keepLifetimes, LIFETIME_LOCK, lifetimeCheckMs } from './lifetime';
import { replayOnce } from './replayer';
import type { PoolsConfig, TimeoutsConfig } from './routing-config';
import { hydrate, snapshotWriter, type HydrateResult } from './snapshot';
import { createVerifier, type Verifier } from './verifier';
import { QUEUE, type SchedulerContext } from './context';
import { submitHandler } from './intake';
import { createSchedulerMetrics, JOB_PATH_BUCKETS, LOCK_WAIT_HISTOGRAM } from './metrics';
import { progressListener } from './progress';
import { CapacityWaiters } from './capacity-waiters';
import { WorkerRegistry } from './registry';
import { cancelHandler } from './cancels';
import { resultHandler } from './results';
import { grpcSafetyChecker, type FailModes, type SafetyChecker } from './safety';
import { breakerSafetyChecker, createSharedBreaker } from './safety-breaker';
import { subscribeWorkers } from './workers-feed';

/** D8 AckWait (30 s) plus a scan of slack. */
const RESULT_REDELIVERY_S = 35;
/** The longest wait between tries to start taking jobs after the first config load (P161). */
const TAKE_WORK_MAX_RETRY_MS = 30_000;
/** The jetstream readiness check's request timeout, inside the health server's 2 s bound per check. */
const STREAM_CHECK_TIMEOUT_MS = 1_500;

export type SchedulerDeps = Pick<ServiceDeps, 'logger' | 'instanceId' | 'registry'> & {
  /** Replaces the gRPC Check client (tests); the shared breaker (D21) wraps either. */
  safety?: SafetyChecker;
  /** Wraps the job store the handlers use (tests: a fault in one call, on the real Redis). */
  wrapStore?: (store: JobStore) => JobStore;
};

export interface Scheduler extends Service {
  /** The bound health port (useful when SCHEDULER_HTTP_ADDR is :0). */
  readonly httpPort: number;
  readonly workers: WorkerRegistry;
  /** Jobs this replica saw waiting for worker capacity (P225). */
  readonly capacityWaiters: CapacityWaiters;
  /** Delivery verification of this replica's dispatches (BEHAVIOURS §3). */
  readonly verifier: Verifier;
  /**
   * The one setter for the `timeouts` section: dispatch/running timeouts apply from the next
   * scan, the scan interval at once (the pending wait is rescheduled). Config reload calls it.
   */
  setTimeouts(t: TimeoutsConfig): void;
  /** The one setter for the `pools` section (routing); the next routing decision uses it. */
  setPools(p: PoolsConfig): void;
  /** The one setter for the `scheduler` section (input/output fail mode, output policy); applies to the next Check. */
  setFailModes(m: FailModes): void;
  readonly failModes: FailModes;
  /** How the worker view started (null until decided). */
  readonly hydration: HydrateResult | null;
  /** One reconciler / replayer turn now if this replica leads (tests). */
  reconcileNow(): Promise<void>;
  replayNow(): Promise<void>;
}

type Phase = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

export function createScheduler(config: SchedulerConfig, deps: SchedulerDeps): Scheduler {
  const { logger, instanceId, registry } = deps;
  routeGrpcLogs(logger); // P291: its policy client's channels
  const workers = new WorkerRegistry({ ttlMs: config.workerTtlMs });
  const capacityWaiters = new CapacityWaiters();
  let bus: Bus | undefined;
  /** P190: the leader loops (snapshot writer, reconciler, replayer) lead only while the bus is connected. */
  const busConnected = (): boolean => bus?.connected === true;
  const metrics = createSchedulerMetrics(registry, {
    unclaimedWorkers: () => workers.live().filter((w) => workers.unresponsive(w)).length,
    submitBacklog: () => (bus?.connected ? bus.backlog(QUEUE, subjects.submit) : Promise.resolve(null)),
  });
  let phase: Phase = 'idle';
  let stopPromise: Promise<void> | undefined;
  let signalStop: () => void = () => undefined;
  const stopRequested = new Promise<void>((resolve) => (signalStop = resolve));
  /** P152: a start's deferred takeWork (waiting for the first config load), if any. */
  let working: Promise<void> = Promise.resolve();

  let health: HealthServer | undefined;
  let redis: RedisClient | undefined;
  let clock: ClockSync | undefined;
  let safety: SafetyChecker | undefined;
  const consumers: Consumer[] = [];
  const subs: Subscription[] = [];
  const progressInflight = new Set<Promise<void>>();
  let consumersBound = false;
  /** The job consumers takeWork has bound (it may be called again after a failure, P161). */
  const bound = new Set<'result' | 'submit' | 'cancel'>();
  let timeouts: TimeoutsConfig = config.timeouts;
  let pools: PoolsConfig = config.pools;
  let watcher: ConfigWatcher | undefined;
  let failModes: FailModes = config.failModes;
  const showFailModes = (m: FailModes): void => {
    metrics.failModeInfo.reset();
    metrics.failModeInfo.set({ input: m.inputFailMode, output: m.outputFailMode }, 1);
  };
  showFailModes(failModes);
  let hydration: HydrateResult | null = null;
  const loops: LeaderLoop[] = [];
  let reconciler: LeaderLoop | undefined;
  let replayer: LeaderLoop | undefined;
  let ctx: SchedulerContext | undefined;
  const verifier = createVerifier(() => ctx, config.verify);

  // D15: every committed transition is broadcast on sys.job.state (core NATS); ones that may not
  // have left are announced once NATS is back (P148).
  let states: StateBroadcaster | undefined;
  const onTransition = (job: JobRecord): void => {
    metrics.jobsTotal.inc({ state: job.state });
    states?.broadcast(job);
  };

  // A result fetched by a replica that then dies is redelivered only after AckWait (30 s, D8);
  // a shorter running timeout ends such a job TIMEOUT although its result is on the way.
  function warnShortRunningTimeout(t: TimeoutsConfig): void {
    if (t.reconciler.running_timeout_seconds < RESULT_REDELIVERY_S) {
      logger.warn('running_timeout_seconds is below the result redelivery bound; a replica crash can time out jobs whose result is in flight', {
        running_timeout_seconds: t.reconciler.running_timeout_seconds,
        bound_seconds: RESULT_REDELIVERY_S,
      });
    }
  }

  function setTimeouts(t: TimeoutsConfig): void {
    const prev = timeouts.reconciler.scan_interval_seconds;
    timeouts = t;
    logger.info('timeouts updated', { ...t.reconciler });
    warnShortRunningTimeout(t);
    if (t.reconciler.scan_interval_seconds !== prev) reconciler?.reschedule();
  }

  function setPools(p: PoolsConfig): void {
    pools = p;
    logger.info('routing updated', { topics: Object.keys(p.topics), pools: Object.keys(p.pools) });
  }

  function setFailModes(m: FailModes): void {
    failModes = { ...m };
    showFailModes(m);
    logger.info('fail modes updated', { input_fail_mode: m.inputFailMode, output_fail_mode: m.outputFailMode, output_policy_enabled: m.outputPolicyEnabled });
  }

  async function start(): Promise<void> {
    if (phase !== 'idle') throw new Error(`scheduler.start() in phase ${phase}`);
    phase = 'starting';
    logger.info('scheduler config', { pools: config.poolsSource, timeouts: config.timeoutsSource, topics: Object.keys(config.pools.topics) });
    warnShortRunningTimeout(timeouts);
    health = await startHealthServer({
      addr: config.httpAddr,
      registry,
      logger,
      checks: [
        // P268: shared by the probes and scrapes that ask at once, and for half a second.
        { name: 'redis', check: sharedCheck(async () => (redis ? pingRedis(redis, 1000) : false)) },
        { name: 'nats', check: () => bus?.connected === true },
        // P263: CORDUM_SYS answers (the socket can be up while no dispatch would be stored).
        { name: 'jetstream', check: sharedCheck(async () => (bus ? bus.streamAnswers(STREAM_CHECK_TIMEOUT_MS) : false)) },
        { name: 'consumers', check: () => consumersBound && phase === 'running' },
        // BEHAVIOURS §4: not ready until the worker view is hydrated or the cold path was chosen.
        { name: 'workers_hydrated', check: () => hydration !== null },
        // D43: the first config load (bootstrap merge + every section applied) succeeded.
        { name: 'config', check: () => watcher?.ready === true },
      ],
    });
    redis = createRedis({ ...config.redis, name: `scheduler:${instanceId}`, events: redisLogEvents(logger) });
    // P241: timestamps other replicas read are taken in Redis's time (clusterNow).
    clock = startClockSync(redis, { log: logger, onMeasure: clockOffsetGauge(registry) });
    await clock.ready;
    const locks = createLocks(redis, { metrics: registry, histogramName: LOCK_WAIT_HISTOGRAM, histogramBuckets: JOB_PATH_BUCKETS });
    bus = await connectBus({ ...config.nats, name: `scheduler:${instanceId}`, logger, registry, waitOnFirstConnect: true });
    // P339: the workers' liveness clocks pause while this replica cannot hear them.
    bus.onConnection((connected) => (connected ? workers.busBack() : workers.busLost()));
    states = createStateBroadcaster({ bus, senderId: instanceId, component: 'scheduler', logger });
    await bus.ensureStreams();
    // D14: each DLQ write is followed by its sys.job.dlq notice (for the gateway's consumer).
    const created: JobStore = createJobStore(redis, { jobTtlMs: config.jobTtlMs, dlqTtlMs: config.dlqTtlMs, onTransition, onDlq: dlqNotifier({ bus, senderId: instanceId, logger }) });
    const store = deps.wrapStore ? deps.wrapStore(created) : created;
    safety = breakerSafetyChecker(deps.safety ?? grpcSafetyChecker(config.safetyKernelAddr, config.safetyDeadlineMs), createSharedBreaker(redis, config.safetyBreaker), { metrics, logger });

    const decodeWorkerPacket = packetDecoder(config.capVerifyKey);
    if (config.capVerifyKey) logger.info('packets from workers must be signed (CAP_VERIFY_KEY_FILE)');
    const c: SchedulerContext = {
      config,
      instanceId,
      logger,
      store,
      locks,
      bus,
      workers,
      capacityWaiters,
      safety,
      metrics,
      pools: () => pools,
      timeouts: () => timeouts,
      failModes: () => failModes,
      verifier,
      decodeWorkerPacket,
      encodeForWorkers: packetEncoder(config.capSigningKey),
    };
    ctx = c;
    // Routing and timeouts from cfg:system:default before the first job is routed (BEHAVIOURS §5).
    watcher = createSchedulerConfigWatcher({ config, redis, bus, deps, sections: schedulerSections({ setPools, setTimeouts, setFailModes, failModeDefaults: config.failModes }) });
    await watcher.start();
    await warnIfEvicting(redis, (msg, fields) => logger.warn(msg, fields));

    // Live heartbeats first, so whatever arrives during the read overrides the snapshot.
    subs.push(...subscribeWorkers(c));
    hydration = await hydrate({ redis, registry: workers, timeoutMs: config.snapshot.readTimeoutMs, floorMs: config.snapshot.hydrateFloorMs, logger });
    subs.push(bus.subscribe(subjects.progress, progressListener(c, progressInflight), { queue: QUEUE }));
    // The worker snapshot (for the gateways' /workers) needs no config.
    const writer = snapshotWriter({ redis, locks, registry: workers, instanceId, intervalMs: config.snapshot.intervalMs, lockTtlMs: config.snapshot.lockTtlMs, logger, busConnected });
    loops.push(writer);
    writer.start();
    // P152: no job is taken with the files' and env's config in place of the stored one (a section
    // refused, a bootstrap merge that keeps failing, Redis away at start): the consumers and the
    // leader loops wait for the first load; /readyz says 503 (check `config`) meanwhile.
    if (watcher.ready) {
      await takeWork(c, locks);
    } else {
      logger.warn('stored config not loaded yet: taking no jobs until it is (the config watcher logs why)');
      working = Promise.race([watcher.readyAfterFirstLoad.then(() => true), stopRequested.then(() => false)])
        .then(async (loaded) => {
          // P161: a failure here (NATS away as the consumers are bound) is retried, not left for
          // good: start() has returned, so nothing would restart the replica, which then took no
          // job while /healthz said it was fine.
          let go = loaded;
          for (let tries = 1; go && phase !== 'stopping' && phase !== 'stopped'; tries++) {
            try {
              await takeWork(c, locks);
              logger.info('stored config loaded: taking jobs');
              return;
            } catch (err) {
              const retryMs = Math.min(TAKE_WORK_MAX_RETRY_MS, 1_000 * 2 ** (Math.min(tries, 6) - 1));
              logger.error('scheduler could not start taking jobs; retrying', { err, tries, retry_in_ms: retryMs });
              go = await unlessStopped(retryMs);
            }
          }
        })
        .catch((err: unknown) => logger.error('scheduler could not start taking jobs', { err }));
    }
    // stop() may have been called while we were starting; the union guards it.
    if ((phase as Phase) === 'starting') phase = 'running';
    // Started is not ready: Redis, NATS or the first config load may still be missing, and
    // /readyz (503 until every check passes) is what says when this replica is ready.
    logger.info('scheduler started', { http_port: health.port, readiness: 'follows /readyz' });
  }

  /** True after `ms`, false as soon as a stop is requested. */
  async function unlessStopped(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const slept = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms)));
    try {
      return await Promise.race([slept, stopRequested.then(() => false)]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Binds the job consumers and starts the verifier and the leader loops (P152: once config is
   * loaded). Called again after a failure (P161): a consumer already bound is not bound twice.
   */
  async function takeWork(c: SchedulerContext, locks: Locks): Promise<void> {
    const b = bus;
    if (!b || !redis) return;
    const { decodeWorkerPacket } = c;
    const bind = async (name: 'result' | 'submit' | 'cancel', consume: () => Promise<Consumer>): Promise<void> => {
      if (bound.has(name)) return;
      consumers.push(await consume());
      bound.add(name);
    };
    // A Redis outage holds messages in process rather than spending their D8 deliveries (P101);
    // a hash slot mid-migration retries its messages in place while the others go on (P259).
    const redisWaits = { unavailable: isRedisUnavailable, retryInPlace: isSlotMoving };
    await bind('result', () => b.consume({ subject: subjects.result, queue: QUEUE, decode: decodeWorkerPacket, handler: resultHandler(c), ...redisWaits }));
    await bind('submit', () => b.consume({ subject: subjects.submit, queue: QUEUE, decode: decodeValidPacket, handler: submitHandler(c), ...redisWaits }));
    await bind('cancel', () => b.consume({ subject: subjects.cancel, queue: QUEUE, decode: decodeWorkerPacket, handler: cancelHandler(c), ...redisWaits }));
    consumersBound = true;
    verifier.start();
    const { ttlMs, renewMs } = config.leader;
    reconciler = createLeaderLoop({
      name: 'reconciler',
      locks,
      key: 'cordum:reconciler:default',
      owner: instanceId,
      ttlMs,
      renewMs,
      periodMs: () => timeouts.reconciler.scan_interval_seconds * 1000,
      logger,
      run: () => reconcileOnce(c).then(() => undefined),
      // Only the leader scans: a replica that lost the lease must not keep exporting its last count.
      notLeader: () => c.metrics.staleJobs.set(0),
      // P190: its timeouts, redispatches and cancels go out on the bus, and it judges workers by heartbeats.
      eligible: busConnected,
    });
    replayer = createLeaderLoop({
      name: 'pending replayer',
      locks,
      key: 'cordum:replayer:pending',
      owner: instanceId,
      ttlMs,
      renewMs,
      periodMs: () => config.replay.intervalMs,
      logger,
      run: () => replayOnce(c).then(() => undefined),
      // P190: cut off from NATS it hears no worker, and would park every retry it drives until it fails `no_workers`.
      eligible: busConnected,
    });
    // P244: no bus needed; it only renews keys.
    const keeper = createLeaderLoop({
      name: 'lifetime keeper',
      locks,
      key: LIFETIME_LOCK,
      owner: instanceId,
      ttlMs,
      renewMs,
      periodMs: () => lifetimeCheckMs(config.jobTtlMs),
      logger,
      run: () => (redis ? keepLifetimes(c, redis) : Promise.resolve()),
    });
    loops.push(reconciler, replayer, keeper);
    reconciler.start();
    replayer.start();
    keeper.start();
  }

  async function doStop(): Promise<void> {
    phase = 'stopping';
    signalStop();
    // A takeWork in progress finishes first, so what it binds is stopped below.
    await working;
    const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        logger.warn('scheduler stop step failed', { step: name, err });
      }
    };
    consumersBound = false;
    // Stop pulling first; Consumer.stop waits for in-flight handlers, which release their job locks.
    await step('consumers', () => Promise.all(consumers.map((c) => c.stop())).then(() => undefined));
    await step('verifier', () => verifier.stop());
    await step('config watcher', () => watcher?.stop());
    // Releases the leader leases and the snapshot writer lock, so another replica takes over at once.
    await step('leader loops', () => Promise.all(loops.map((l) => l.stop())).then(() => undefined));
    await step('subscriptions', () => subs.forEach((s) => s.unsubscribe()));
    await step('progress drain', () => Promise.allSettled([...progressInflight]).then(() => undefined));
    await step('safety client', () => safety?.close());
    states?.stop();
    await step('bus', () => bus?.close());
    clock?.stop();
    await step('redis', () => (redis ? closeRedis(redis) : undefined));
    await step('health', () => health?.close());
    phase = 'stopped';
  }

  return {
    start,
    stop(): Promise<void> {
      stopPromise ??= doStop();
      return stopPromise;
    },
    get httpPort(): number {
      return health?.port ?? 0;
    },
    workers,
    capacityWaiters,
    verifier,
    setTimeouts,
    setPools,
    setFailModes,
    get failModes(): FailModes {
      return { ...failModes };
    },
    get hydration(): HydrateResult | null {
      return hydration;
    },
    reconcileNow: () => reconciler?.runOnce() ?? Promise.resolve(),
    replayNow: () => replayer?.runOnce() ?? Promise.resolve(),
  };
}
