import { type Logger } from './logger';
import { MAX_TIMER_MS } from './config';

export type ShutdownOutcome = 'clean' | 'error' | 'timeout';

export interface ShutdownOptions {
  logger: Logger;
  /** Whole-shutdown deadline (ARCHITECTURE: drain within 15 s). */
  timeoutMs?: number;
  /** Injected for tests; default process.exit. */
  exit?: (code: number) => void;
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * Idempotent shutdown with a deadline. Cleanups run one after another in reverse
 * registration order (last started, first stopped: intake before connections),
 * each even if an earlier one throws.
 */
export class Shutdown {
  private readonly cleanups: { name: string; fn: () => Promise<void> | void }[] = [];
  private readonly logger: Logger;
  private timeoutMs: number;
  private readonly exit: (code: number) => void;
  private outcomePromise: Promise<ShutdownOutcome> | undefined;
  private runPromise: Promise<void> | undefined;
  private handler: ((signal: NodeJS.Signals) => void) | undefined;
  private hupHandler: (() => void) | undefined;
  private fatalHandlers: { uncaughtException: (err: Error) => void; unhandledRejection: (reason: unknown) => void } | undefined;
  private listened = false;
  /** An uncaught exception or unhandled rejection was seen: the exit code is 1 whoever started the stop. */
  private fatalSeen = false;
  private state: 'idle' | 'running' | 'done' = 'idle';
  private result: ShutdownOutcome | undefined;

  constructor(opts: ShutdownOptions) {
    this.logger = opts.logger;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.exit = opts.exit ?? ((code) => process.exit(code));
  }

  /** A stop has begun (a signal, a fatal error, or run()): a start still running is being cut by it. */
  get stopping(): boolean {
    return this.state !== 'idle';
  }

  /** Outcome of the finished run, or undefined while idle/running. */
  get outcome(): ShutdownOutcome | undefined {
    return this.result;
  }

  /**
   * Raises the whole-stop deadline to at least `ms` (P218), before a stop starts; `why` is logged. A
   * part whose own stop takes longer than the default 15 s (a worker's `stopTimeoutMs` plus its
   * answers) asks for it here, so the process is not cut while it still hands jobs back.
   */
  ensureDeadline(ms: number, why: string): void {
    // P285: a Node timer holds at most MAX_TIMER_MS; a longer deadline fired at once (exit 1, nothing drained).
    ms = Math.min(ms, MAX_TIMER_MS);
    if (this.state !== 'idle' || ms <= this.timeoutMs) return;
    this.logger.info('shutdown: deadline raised', { from_ms: this.timeoutMs, to_ms: ms, why });
    this.timeoutMs = ms;
  }

  /** The whole-stop deadline now (ms). */
  get deadlineMs(): number {
    return this.timeoutMs;
  }

  add(name: string, fn: () => Promise<void> | void): void {
    if (this.state !== 'idle') {
      this.logger.warn('shutdown: cleanup added after shutdown started, ignored', { cleanup: name });
      return;
    }
    this.cleanups.push({ name, fn });
  }

  /**
   * Installs SIGTERM/SIGINT handlers once (and a SIGHUP one that only logs, P208): run(), then exit(0), or exit(1) on deadline, error, or a
   * fatal error (below) at any time before the exit, during a signal's stop too.
   * Also handles what would otherwise crash the process with a bare stack on stderr (an exception
   * thrown in a timer, an unhandled rejection): one JSON `fatal: …` error line, the same stop
   * (leases, reports and connections released, not left to expire), then exit(1).
   */
  listen(): void {
    if (this.listened || this.state !== 'idle') return;
    this.listened = true;
    this.handler = (signal) => {
      if (this.state !== 'idle') {
        this.logger.warn('shutdown: already in progress', { signal });
        return;
      }
      this.logger.info('shutdown: signal received', { signal });
      void this.runOutcome().then((outcome) => this.exit(outcome === 'clean' && !this.fatalSeen ? 0 : 1));
    };
    for (const s of SIGNALS) process.on(s, this.handler);
    // P208: with no listener, Node's default for SIGHUP ends the process at once: no drain, no
    // lease released, a worker's jobs in flight left to time out. Operators send SIGHUP expecting a
    // reload (the safety kernel reloads its policy file on it, P179): a service that reloads
    // nothing says so and runs on. A process with its own SIGHUP listener (the kernel) is left to it.
    this.hupHandler = () => {
      if (process.listenerCount('SIGHUP') > 1) return;
      this.logger.warn('SIGHUP ignored: this service reloads nothing on SIGHUP; config changes apply through the config API, and a changed file or env var at the next start (SIGTERM stops it gracefully)', { signal: 'SIGHUP' });
    };
    process.on('SIGHUP', this.hupHandler);
    const fatal = (msg: string, err: unknown): void => {
      this.logger.error(msg, { err });
      this.fatalSeen = true;
      // A stop already running (a signal's, or an earlier fatal's) goes on: a rejection storm as
      // Redis drops must not cut the release of leases and reports; its deadline still bounds it.
      if (this.state === 'running') return;
      if (this.state === 'done') {
        this.exit(1);
        return;
      }
      void this.runOutcome().then(() => this.exit(1));
    };
    this.fatalHandlers = { uncaughtException: (err) => fatal('fatal: uncaught exception; stopping', err), unhandledRejection: (reason) => fatal('fatal: unhandled rejection; stopping', reason) };
    process.on('uncaughtException', this.fatalHandlers.uncaughtException);
    process.on('unhandledRejection', this.fatalHandlers.unhandledRejection);
  }

  /** Memoised: every call returns the same promise. Never rejects. */
  run(): Promise<void> {
    this.runPromise ??= this.runOutcome().then(() => undefined);
    return this.runPromise;
  }

  private runOutcome(): Promise<ShutdownOutcome> {
    this.outcomePromise ??= this.execute();
    return this.outcomePromise;
  }

  private async execute(): Promise<ShutdownOutcome> {
    this.state = 'running';
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    // Not unref'd on purpose: if a hung cleanup holds no handle, an unref'd timer
    // would let the process drain and exit 0 instead of reporting the deadline.
    const deadline = new Promise<ShutdownOutcome>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.timeoutMs);
    });
    const outcome = await Promise.race([this.runAll(), deadline]);
    clearTimeout(timer);
    this.removeHandlers();
    this.state = 'done';
    this.result = outcome;
    const elapsedMs = Date.now() - started;
    if (outcome === 'timeout') this.logger.error('shutdown: deadline exceeded', { timeoutMs: this.timeoutMs, elapsedMs });
    else this.logger.info('shutdown: complete', { outcome, elapsedMs });
    return outcome;
  }

  private async runAll(): Promise<ShutdownOutcome> {
    let failed = false;
    for (const { name, fn } of [...this.cleanups].reverse()) {
      try {
        await fn();
        this.logger.debug('shutdown: cleanup done', { cleanup: name });
      } catch (err) {
        failed = true;
        this.logger.error('shutdown: cleanup failed', { cleanup: name, err });
      }
    }
    return failed ? 'error' : 'clean';
  }

  private removeHandlers(): void {
    if (this.handler) for (const s of SIGNALS) process.off(s, this.handler);
    this.handler = undefined;
    if (this.hupHandler) process.off('SIGHUP', this.hupHandler);
    this.hupHandler = undefined;
    // Removed only once the stop has finished (exit follows): a throw during the stop still ends in exit(1).
    if (this.fatalHandlers) {
      process.off('uncaughtException', this.fatalHandlers.uncaughtException);
      process.off('unhandledRejection', this.fatalHandlers.unhandledRejection);
    }
    this.fatalHandlers = undefined;
  }
}
