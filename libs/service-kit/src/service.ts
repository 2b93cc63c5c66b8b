import { type Registry } from 'prom-client';
import { acceptCommandLine } from './argv';
import { type LogLevel, commonEnvSchema, defaultInstanceId, exitOnConfigError, loadConfig, logConfig, processEnv } from './config';
import { createLogger, type Logger } from './logger';
import { createMetricsRegistry } from './metrics';
import { Shutdown } from './shutdown';
import { errorText } from './errors';

/** A composition root: main.ts builds one, start()s it and stop()s it on SIGTERM. */
export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ServiceDeps {
  logger: Logger;
  /** CORDUM_INSTANCE_ID or `<service>-<hostname>-<pid>`. */
  instanceId: string;
  /** The process's one registry, default labels service + pod. */
  registry: Registry;
  /**
   * Register extra cleanups (run in reverse order of registration). service.stop() is registered
   * right after create() returns: cleanups added in create() run after it, ones added in start()
   * run before it.
   */
  shutdown: Shutdown;
}

export interface RunServiceOptions<C> {
  name: string;
  /** Usually `(env) => loadConfig(schema, env)`; a ConfigError exits 2 with one line. */
  load: (env: NodeJS.ProcessEnv) => C;
  create: (config: C, deps: ServiceDeps) => Service | Promise<Service>;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Command-line arguments; defaults to process.argv.slice(2). Only -h/--help is accepted. */
  argv?: readonly string[];
  shutdownTimeoutMs?: number;
  exit?: (code: number) => void;
}

const runtimeEnvSchema = commonEnvSchema.pick({ CORDUM_INSTANCE_ID: true, CORDUM_LOG_LEVEL: true });

/**
 * The whole of an app's main.ts:
 *
 *   runService({ name: 'scheduler', load: loadSchedulerConfig, create: createScheduler });
 *
 * Checks the command line first (-h/--help → usage on stdout, exit 0; any other
 * argument → one stderr line, exit 2; nothing loaded or connected either way).
 * Loads config (bad env → one stderr line, exit 2), creates the logger and the
 * metrics registry, logs the config without secrets, starts the service and
 * stops it on SIGTERM/SIGINT within the shutdown deadline (exit 0, or 1 on
 * deadline/error). A failed start() stops what was started and exits 1.
 */
export function runService<C>(opts: RunServiceOptions<C>): void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  if (!acceptCommandLine({ name: opts.name, argv: opts.argv, exit })) return;
  exitOnConfigError(async () => {
    const env = opts.env ?? processEnv();
    const runtime = loadConfig(runtimeEnvSchema, env);
    const config = opts.load(env);
    const instanceId = runtime.CORDUM_INSTANCE_ID ?? defaultInstanceId(opts.name);
    const level: LogLevel = runtime.CORDUM_LOG_LEVEL;
    const logger = createLogger({ service: opts.name, instance: instanceId, level });
    logConfig(logger, config as object);
    const registry = createMetricsRegistry({ service: opts.name, pod: instanceId });
    const shutdown = new Shutdown({ logger, timeoutMs: opts.shutdownTimeoutMs, exit });
    shutdown.listen();

    let service: Service | undefined;
    try {
      service = await opts.create(config, { logger, instanceId, registry, shutdown });
      const started = service;
      shutdown.add('service', () => started.stop());
      await service.start();
      if (!shutdown.stopping) logger.info('service started');
    } catch (err) {
      // P290: a SIGTERM while starting (a rolling restart catching a replica that waits for NATS)
      // closes what the start is waiting on, which then throws: not a failed start. The stop's
      // own caller (the signal handler) exits, 0 when the stop was clean.
      if (shutdown.stopping) {
        logger.info('service start ended by the stop', { err: errorText(err) });
        await shutdown.run();
        return;
      }
      logger.error('service failed to start', { err });
      await shutdown.run();
      exit(1);
    }
  }, exit);
}
