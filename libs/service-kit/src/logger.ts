import { type LogLevel } from './config';
import { isNotSentError, NOT_SENT_TEXT } from './errors';

// A deliberately small structured logger: one JSON object per line on stdout,
// {ts, level, service, instance, msg, ...fields}. Writes are synchronous for
// files and pipes on Linux, so lines logged just before process.exit survive.

export interface Logger {
  debug(msg: string, fields?: object): void;
  info(msg: string, fields?: object): void;
  warn(msg: string, fields?: object): void;
  error(msg: string, fields?: object): void;
  child(fields: object): Logger;
  /** Optional so that tests and adapters can pass any Logger-shaped object. */
  readonly level?: LogLevel;
}

export interface LoggerOptions {
  service: string;
  instance: string;
  level?: LogLevel;
  /** Where lines go (without trailing newline handling: the line includes "\n"). Default: stdout. */
  write?: (line: string) => void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * {message, code, stack, cause} — Error's own fields are non-enumerable, so JSON.stringify would
 * give {}. A command Redis never got (isNotSentError) is one plain line: no stack, which says
 * nothing about an outage.
 */
export function serializeError(err: Error, depth = 0): Record<string, unknown> {
  if (isNotSentError(err)) return { name: err.name, message: NOT_SENT_TEXT };
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out['code'] = code;
  if (err.stack !== undefined) out['stack'] = err.stack;
  if (err.cause !== undefined && depth < 3) out['cause'] = err.cause instanceof Error ? serializeError(err.cause, depth + 1) : err.cause;
  return out;
}

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return serializeError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

function stringify(record: Record<string, unknown>): string {
  try {
    return JSON.stringify(record, replacer);
  } catch {
    // circular fields: keep the line, drop the fields rather than lose the log
    return JSON.stringify({ ts: record['ts'], level: record['level'], service: record['service'], instance: record['instance'], msg: record['msg'], fieldsError: 'unserializable fields' });
  }
}

let stdoutGuarded = false;
let stdoutBroken = false;

/**
 * stdout as a log sink that may fail: a reader gone (EPIPE: a launcher killed, a log shipper
 * that died) or a full disk (ENOSPC). Unhandled, the stream's error was an uncaught exception,
 * whose fatal line failed the same way and raised another, for ever: a process spinning a whole
 * core that no SIGTERM could stop (P160). Once stdout fails, lines are dropped; the process goes
 * on (its metrics and health still say how it is). stderr, where Node writes its own warnings,
 * gets the same listener.
 */
function writeStdout(line: string): void {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    process.stdout.on('error', () => {
      stdoutBroken = true;
    });
    process.stderr.on('error', () => undefined);
  }
  if (stdoutBroken) return;
  process.stdout.write(line);
}

export function createLogger(opts: LoggerOptions): Logger {
  const write = opts.write ?? writeStdout;
  return makeLogger(opts.level ?? 'info', { service: opts.service, instance: opts.instance }, write);
}

function makeLogger(level: LogLevel, base: Record<string, unknown>, write: (line: string) => void): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, msg: string, fields?: object): void => {
    if (RANK[lvl] < min) return;
    const record: Record<string, unknown> = { ts: new Date().toISOString(), level: lvl, ...base, msg, ...fields };
    write(`${stringify(record)}\n`);
  };
  return {
    level,
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => makeLogger(level, { ...base, ...fields }, write),
  };
}
