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

/** An error's message for a log line or a reply, whatever was thrown. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
