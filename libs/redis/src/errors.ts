/**
 * Typed Redis errors with a stable `code` (STYLE 11). `redis_unavailable` is what callers map
 * to 503 (BEHAVIOURS §8); script codes come from the negative return values of our Lua.
 */
export type RedisErrorCode = 'redis_unavailable' | 'redis_slot_moving' | 'redis_error' | 'script_error' | (string & {});

export class RedisError extends Error {
  override readonly name = 'RedisError';
  constructor(
    readonly code: RedisErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * ioredis's error once a command's redirections passed `maxRedirections`, when the last one was a
 * redirection too. ioredis spends the budget before it looks at an error, so a timeout or a lost
 * connection on the last try comes wrapped the same way ("… Last error: Error: Command timed
 * out"): that one is classified by what it wraps.
 */
const SLOT_MOVING = /Too many Cluster redirections\. Last error: (?:ReplyError: )?(?:MOVED|ASK|TRYAGAIN)\b/;

/** What a log line adds to a redirection loop's error (P259): where to look. */
const SLOT_MOVING_HINT = 'a hash slot is being migrated, or a reshard left it open: `redis-cli --cluster check <node>` lists open slots, `--cluster fix` closes them';

/**
 * Redis unavailable, and the command certainly did not run: never sent (ioredis's
 * MaxRetriesPerRequest, the offline refusal), no connection at all, or refused by the server
 * before running (the cluster down or loading, the slot moving).
 */
const NOT_RUN_PATTERNS = [
  /Reached the max retries per request limit/i,
  /ECONNREFUSED/,
  /None of startup nodes is available/i,
  /CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN/,
  /Stream isn't writeable/i,
];

/**
 * P277: Redis answers but refuses every write: at `maxmemory` under `noeviction` (OOM), a failed
 * RDB/AOF write (MISCONF), a replica promoted away from us (READONLY), a script running past its
 * time (BUSY), too few replicas for `min-replicas-to-write` (NOREPLICAS). For every caller this is
 * an outage of Redis, not a bad command: a bus consumer holds its message (P101) instead of
 * spending its 20 deliveries on it. Counted as "may have run": a script can be refused part way.
 */
const REFUSING_WRITES = /\bOOM command not allowed\b|\bMISCONF\b|\bREADONLY\b|\bBUSY Redis is busy\b|\bNOREPLICAS\b/;

const UNAVAILABLE_PATTERNS = [
  ...NOT_RUN_PATTERNS,
  REFUSING_WRITES,
  // The connection went down or the answer did not come: the command may have run.
  /Connection is closed/i,
  /connection lost with the command in flight/i,
  /Socket timeout/i,
  /Command timed out/i,
  /ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH/,
];

/**
 * True for errors that mean "Redis is not reachable right now" rather than a bad command. Not a
 * redirection loop that ended in a redirection (isSlotMoving): that concerns one hash slot's
 * keys, and the rest of Redis answers (P259).
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (err instanceof RedisError) return err.code === 'redis_unavailable';
  const msg = err instanceof Error ? err.message : String(err);
  return !SLOT_MOVING.test(msg) && UNAVAILABLE_PATTERNS.some((re) => re.test(msg));
}

/**
 * P258: a Redis error after which the command certainly did not run (NOT_RUN_PATTERNS), so a
 * caller may answer that nothing happened. A redirection loop ended by MOVED, ASK or TRYAGAIN ran
 * at no hop; one ended by a timeout may have run, as what it wraps says.
 */
export function redisCommandNotRun(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return NOT_RUN_PATTERNS.some((re) => re.test(msg));
}

/**
 * P259: ioredis gave up following MOVED/ASK/TRYAGAIN for a command: its hash slot is being
 * migrated, or a reshard that stopped left it open. Its keys are there once the slot settles, so
 * a caller retries it (a bus consumer in place, `retryInPlace`) instead of taking it for a bad
 * command, without treating all of Redis as down.
 */
export function isSlotMoving(err: unknown): boolean {
  if (err instanceof RedisError) return err.code === 'redis_slot_moving';
  return SLOT_MOVING.test(err instanceof Error ? err.message : String(err));
}

/**
 * True when Redis refused the connection's credentials: WRONGPASS (no such user, or a wrong
 * password), NOAUTH (a password is required and none was given), NOPERM (the user may not run a
 * command of the connection set-up). Only a change of REDIS_URL or of the server's users ends it.
 */
export function isRedisAuthError(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /^(WRONGPASS|NOAUTH|NOPERM)\b/.test(msg);
}

/** What a command that never left (maxRetriesPerRequest) is called in a log line. */
export const REDIS_NOT_SENT_TEXT = 'redis unavailable (command not sent: connection down)';

/**
 * An error's text for a log line. ioredis rejects a command it held while the connection was
 * down with "Reached the max retries per request limit (which is 1). Refer to
 * maxRetriesPerRequest option for details.", which reads like a setting to change; it says
 * REDIS_NOT_SENT_TEXT instead. Any other error gives its message.
 */
export function redisErrorText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return /Reached the max retries per request limit/i.test(msg) ? REDIS_NOT_SENT_TEXT : withSlotHint(msg);
}

/** A redirection loop's message with SLOT_MOVING_HINT (P259); any other as it is. */
function withSlotHint(msg: string): string {
  return SLOT_MOVING.test(msg) && !msg.includes(SLOT_MOVING_HINT) ? `${msg} (${SLOT_MOVING_HINT})` : msg;
}

/** True for Redis's WRONGTYPE reply: the key holds another type than the command works on. */
export function isWrongType(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('WRONGTYPE');
}

/** Wraps any thrown value from ioredis into a RedisError with a stable code. */
export function toRedisError(err: unknown): RedisError {
  if (err instanceof RedisError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const code = isSlotMoving(err) ? 'redis_slot_moving' : isRedisUnavailable(err) ? 'redis_unavailable' : 'redis_error';
  return new RedisError(code, withSlotHint(msg), { cause: err });
}

/**
 * The one place where a script's negative return codes become named errors (STYLE 5).
 *
 *   const codes = scriptCodes({ '-1': 'not_found', '-2': 'fenced' });
 *   const n = codes.check('setState', await runner.run<number>('setState', keys, args));
 */
export interface ScriptCodes {
  /** The code name for a negative integer result, or undefined when the result is not an error. */
  codeOf(result: unknown): string | undefined;
  /** Throws RedisError(code) for a mapped or unknown negative integer; returns the result otherwise. */
  check<T>(script: string, result: T): T;
}

export function scriptCodes(table: Record<number, string>): ScriptCodes {
  const codeOf = (result: unknown): string | undefined => {
    if (typeof result !== 'number' || result >= 0) return undefined;
    return table[result] ?? 'script_error';
  };
  return {
    codeOf,
    check<T>(script: string, result: T): T {
      const code = codeOf(result);
      if (code !== undefined) throw new RedisError(code, `${script}: returned ${String(result)} (${code})`);
      return result;
    },
  };
}

/** Codes shared by every fenced script in the repo (see @cordum/locks FENCE_CHECK_LUA). */
export const FENCED = -2;
