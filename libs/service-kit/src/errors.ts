/**
 * Typed errors with a stable `code`: callers across package boundaries match on
 * `code`, never on message text or `instanceof` (bundles may duplicate classes).
 */
export class CordumError extends Error {
  readonly code: string;

  constructor(code: string, message: string, opts?: { cause?: unknown }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CordumError';
    this.code = code;
  }
}

/** Bad configuration. The message is one line that names the variable(s). */
export class ConfigError extends Error {
  readonly code = 'config_invalid' as const;

  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof ConfigError || (typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'config_invalid');
}

/**
 * What ioredis's MaxRetriesPerRequestError (a command held while the connection was down, then
 * dropped unsent) is called in a log line. Its own text, "Reached the max retries per request
 * limit (which is 1). Refer to "maxRetriesPerRequest" option for details.", reads like a setting
 * to change. The same words as @cordum/redis REDIS_NOT_SENT_TEXT (this package depends on none).
 */
export const NOT_SENT_TEXT = 'redis unavailable (command not sent: connection down)';

/** True for ioredis's error for a command dropped unsent while the connection was down. */
export function isNotSentError(err: unknown): boolean {
  return err instanceof Error && err.name === 'MaxRetriesPerRequestError';
}

/** An error's message for a log line or a reply, whatever was thrown. */
export function errorText(err: unknown): string {
  if (isNotSentError(err)) return NOT_SENT_TEXT;
  return err instanceof Error ? err.message : String(err);
}
