// Composition root of the echo worker: connections, the SDK worker, the optional health server.
import { startHealthServer, type HealthServer, type Logger, type Registry, type Service, type Shutdown } from '@cordum/service-kit';
import { connectWorkerRuntime, createWorker, validateWorkerOptions, workerStopDeadlineMs, type Worker, type WorkerRuntime } from '@cordum/worker-sdk';
import { Counter } from 'prom-client';
import type { EchoWorkerConfig } from './config';
import { echoHandler } from './echo';

export interface EchoWorkerDeps {
  logger: Logger;
  registry: Registry;
  /** runService's: its deadline is raised to the worker's stop plus its answers (P218). */
  shutdown?: Pick<Shutdown, 'ensureDeadline'>;
}

export interface EchoWorker extends Service {
  /** The SDK worker once started (tests read its stats). */
  readonly worker: Worker | null;
  readonly runtime: WorkerRuntime | null;
}

type State = 'created' | 'starting' | 'running' | 'stopped';

export function createEchoWorker(config: EchoWorkerConfig, deps: EchoWorkerDeps): EchoWorker {
  const log = deps.logger.child({ worker_id: config.workerId });
  deps.shutdown?.ensureDeadline(workerStopDeadlineMs({ workerId: config.workerId, stopTimeoutMs: config.stopTimeoutMs }), 'WORKER_STOP_TIMEOUT');
  const executions = new Counter({
    name: 'cordum_worker_executions_total',
    help: 'Echo handler executions, by outcome',
    labelNames: ['status'],
    registers: [deps.registry],
  });
  let state: State = 'created';
  let runtime: WorkerRuntime | null = null;
  let worker: Worker | null = null;
  let health: HealthServer | null = null;
  let stopping: Promise<void> | null = null;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      state = 'stopped';
      // Order: stop intake and drain jobs, then the probes, then the connections.
      const steps: [string, () => Promise<void> | undefined][] = [
        ['worker', () => worker?.stop()],
        ['health', () => health?.close()],
        ['runtime', () => runtime?.close()],
      ];
      for (const [name, fn] of steps) {
        try {
          await fn();
        } catch (err) {
          log.error('echo-worker stop step failed', { step: name, err: (err as Error).message });
        }
      }
    })();
    return stopping;
  };

  return {
    get worker() {
      return worker;
    },
    get runtime() {
      return runtime;
    },
    async start() {
      if (state !== 'created') throw new Error(`echo-worker start() called in state ${state}`);
      state = 'starting';
      const options = {
        workerId: config.workerId,
        pool: config.pool,
        topics: config.topics,
        registry: deps.registry,
        maxParallelJobs: config.maxParallelJobs,
        directDispatch: config.directDispatch,
        heartbeatIntervalMs: config.heartbeatIntervalMs,
        stopTimeoutMs: config.stopTimeoutMs,
        claimTtlMs: config.claimTtlMs,
        signingKey: config.signingKey,
        verifyKey: config.verifyKey,
        handler: echoHandler({
          workerId: config.workerId,
          echoDelayMs: config.echoDelayMs,
          execLogPath: config.execLogPath,
          faultPrompts: config.faultPrompts,
          onExecution: (status) => executions.inc({ status }),
        }),
      };
      // A bad option fails the start before anything connects (the worker checks them again).
      validateWorkerOptions(options);
      const rt = await connectWorkerRuntime({ name: config.workerId, nats: config.nats, redis: config.redis, logger: log, registry: deps.registry });
      if (state !== 'starting') {
        await rt.close(); // stop() ran while we were connecting
        return;
      }
      runtime = rt;
      if (config.httpAddr) {
        health = await startHealthServer({ addr: config.httpAddr, registry: deps.registry, logger: log, checks: rt.checks });
      }
      worker = createWorker({ ...options, bus: rt.bus, redis: rt.redis, logger: log });
      await worker.start();
      state = 'running';
    },
    stop,
  };
}
