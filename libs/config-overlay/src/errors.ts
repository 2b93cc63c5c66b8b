import { CordumError } from '@cordum/service-kit';

/**
 * Stable codes (STYLE 11): the gateway maps `revision_conflict` to 409 and `config_invalid_data`
 * / `invalid_scope` to 400; callers match on `code`, never on `instanceof`.
 */
export type ConfigOverlayErrorCode =
  | 'revision_conflict'
  | 'invalid_scope'
  | 'config_invalid_data'
  | 'config_corrupt'
  | 'cas_exhausted';

export class ConfigOverlayError extends CordumError {
  declare readonly code: ConfigOverlayErrorCode;
  constructor(code: ConfigOverlayErrorCode, message: string, opts?: { cause?: unknown }) {
    super(code, message, opts);
    this.name = 'ConfigOverlayError';
  }
}

/** A compare-and-set lost: `currentRevision` is what the caller must re-read and retry against. */
export class RevisionConflictError extends ConfigOverlayError {
  declare readonly code: 'revision_conflict';
  constructor(
    readonly expectedRevision: number,
    readonly currentRevision: number,
  ) {
    super('revision_conflict', `revision conflict: expected ${expectedRevision}, current ${currentRevision}`);
    this.name = 'RevisionConflictError';
  }
}

export interface ConfigFieldError {
  /** Dotted path inside `data`, e.g. `timeouts.reconciler.dispatch_timeout_seconds`. */
  path: string;
  message: string;
}

/** `data` failed `validateConfig`; `errors` carries one entry per bad field. */
export class ConfigValidationError extends ConfigOverlayError {
  declare readonly code: 'config_invalid_data';
  constructor(readonly errors: ConfigFieldError[]) {
    super('config_invalid_data', `invalid config: ${errors.map((e) => `${e.path || '<root>'}: ${e.message}`).join('; ')}`);
    this.name = 'ConfigValidationError';
  }
}

export function isRevisionConflict(err: unknown): err is RevisionConflictError {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'revision_conflict';
}
