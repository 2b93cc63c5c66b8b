import { hostname } from 'node:os';
import { z } from 'zod';
import { ConfigError, isConfigError, errorText } from './errors';

// Env parsing. `loadConfig` is pure: main.ts (or `runService`) hands it the env.
// Every helper carries its own message so that a bad variable reads as one line:
//   invalid config: REDIS_POOL_SIZE must be a positive integer (got "abc")

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Longest delay a Node timer takes; a longer one fires after 1 ms, so an interval would spin. */
export const MAX_TIMER_MS = 2_147_483_647;

/** Parses "500ms" | "30s" | "5m" | "1h" | "7d" | "250" (plain number = ms) into milliseconds. */
export function parseDurationMs(raw: string): number | undefined {
  const m = DURATION_RE.exec(raw.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * (DURATION_UNIT_MS[m[2] ?? 'ms'] ?? 1);
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** Parses "host:port", ":port" (host 0.0.0.0) or "[::1]:port". */
export function parseAddr(raw: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]*)):(\d{1,5})$/.exec(raw.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

function durationSchema(maxMs: number, maxText: string) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = typeof v === 'number' ? v : parseDurationMs(v);
    if (ms === undefined || ms < 0 || !Number.isFinite(ms)) {
      ctx.addIssue({ code: 'custom', message: 'must be a duration like 500ms, 30s or 5m' });
      return z.NEVER;
    }
    if (ms > maxMs) {
      ctx.addIssue({ code: 'custom', message: `must be at most ${maxText}` });
      return z.NEVER;
    }
    return ms;
  });
}

/**
 * A duration that may drive a timer: at most MAX_TIMER_MS (≈ 24.8 d), beyond which Node
 * fires after 1 ms. Use `.default(30_000)` (output value) or `.prefault('30s')` (parsed).
 */
export const zDuration = durationSchema(MAX_TIMER_MS, '24d (Node timers overflow beyond)');

const DAY_MS = 86_400_000;
/** JOB_TTL (D45) of the gateway and the scheduler: a record lifetime, never a timer; 1 m to 30 d, default 7 d. */
export const zJobTtl = durationSchema(30 * DAY_MS, '30d')
  .refine((ms) => ms >= 60_000, { message: 'must be between 1m and 30d' })
  .default(7 * DAY_MS);

/**
 * A non-empty string turned into `parse`'s value (e.g. a key read from the file it names);
 * `parse` throws an Error whose message names the problem (a parser from another library),
 * reported as the variable's one line. The value is parsed once, here.
 */
export function zParsedString<T>(parse: (v: string) => T) {
  return z
    .string()
    .min(1)
    .transform((v, ctx) => {
      try {
        return parse(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: errorText(err) });
        return z.NEVER;
      }
    });
}

/** A non-empty string that `check` accepts (it throws as `parse` does), kept as written. */
export function zCheckedString(check: (v: string) => unknown) {
  return zParsedString((v) => {
    check(v);
    return v;
  });
}

export type Addr = { host: string; port: number };

/** "host:port" | ":port" → {host, port}; ":8081" binds 0.0.0.0. */
export const zAddr = z.string().transform((v, ctx): Addr => {
  const a = parseAddr(v);
  if (!a) {
    ctx.addIssue({ code: 'custom', message: 'must be an address like host:port or :port (port 0-65535)' });
    return z.NEVER;
  }
  return a;
});

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

export const zBool = z.union([z.string(), z.boolean()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  const s = v.trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  ctx.addIssue({ code: 'custom', message: 'must be true|false|1|0|yes|no' });
  return z.NEVER;
});

/** Comma list → trimmed, non-empty entries. An unset variable gives []. */
export const zCsv = z
  .string()
  .optional()
  .transform((v) => (v ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));

/** Integer with bounds; env values are strings, so this coerces. */
export function zInt(opts: { min?: number; max?: number; what?: string } = {}) {
  const { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = opts;
  const what = opts.what ?? (min === 1 ? 'a positive integer' : min === 0 ? 'a non-negative integer' : 'an integer');
  const range = max === Number.MAX_SAFE_INTEGER ? '' : ` <= ${max}`;
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = typeof v === 'number' ? v : /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      ctx.addIssue({ code: 'custom', message: `must be ${what}${range}` });
      return z.NEVER;
    }
    return n;
  });
}
export const zPositiveInt = zInt({ min: 1 });

/** A decimal number (fractions and exponents allowed) within [min, max]; env values are strings. */
export function zNumber(opts: { min: number; max: number }) {
  const { min, max } = opts;
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = typeof v === 'number' ? v : /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(v) ? Number(v) : NaN;
    if (!Number.isFinite(n) || n < min || n > max) {
      ctx.addIssue({ code: 'custom', message: `must be a number from ${min} to ${max}` });
      return z.NEVER;
    }
    return n;
  });
}
export const zNonNegativeInt = zInt({ min: 0 });

/** A URL whose scheme is one of `schemes` (without "://"). */
export function zUrl(schemes: string[]) {
  const list = schemes.map((s) => `${s}://`).join(' or ');
  return z.string().refine((v) => isUrlWithScheme(v, schemes), { message: `must be a URL starting with ${list}` });
}

/** Comma list of URLs, each with one of `schemes`. */
export function zUrlList(schemes: string[]) {
  const list = schemes.map((s) => `${s}://`).join(' or ');
  return z.string().transform((v, ctx) => {
    const urls = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (urls.length === 0 || !urls.every((u) => isUrlWithScheme(u, schemes))) {
      ctx.addIssue({ code: 'custom', message: `must be a comma list of URLs starting with ${list}` });
      return z.NEVER;
    }
    return urls;
  });
}

function isUrlWithScheme(v: string, schemes: string[]): boolean {
  try {
    const u = new URL(v);
    return schemes.includes(u.protocol.replace(/:$/, '')) && u.host !== '';
  } catch {
    return false;
  }
}

const zHostPortList = zCsv.superRefine((list, ctx) => {
  const bad = list.find((a) => parseAddr(a) === undefined && !isUrlWithScheme(a, ['redis', 'rediss']));
  if (bad !== undefined) ctx.addIssue({ code: 'custom', message: `must be a comma list of host:port (bad entry "${bad}")` });
});

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** CONTRACT §1 common env with its defaults. Extend it per app: `commonEnvSchema.extend({...})`. */
export const commonEnvSchema = z.object({
  REDIS_URL: zUrl(['redis', 'rediss']).default('redis://127.0.0.1:6379'),
  REDIS_CLUSTER_ADDRESSES: zHostPortList,
  REDIS_POOL_SIZE: zPositiveInt.default(20),
  REDIS_MIN_IDLE_CONNS: zNonNegativeInt.default(5),
  NATS_URL: zUrlList(['nats', 'tls', 'ws', 'wss']).default(['nats://127.0.0.1:4222']),
  /** Optional: callers default it with `defaultInstanceId(service)`. */
  CORDUM_INSTANCE_ID: z.string().optional(),
  CORDUM_LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
});
export type CommonEnv = z.infer<typeof commonEnvSchema>;

/** `<service>-<hostname>-<pid>`: unique per process even for replicas on one host. */
export function defaultInstanceId(service: string): string {
  return `${service}-${hostname()}-${process.pid}`;
}

/** The process environment. The one place outside tests that reads it (see runService). */
export function processEnv(): NodeJS.ProcessEnv {
  return process.env;
}

const SECRET_KEY_RE = /KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL/i;
/**
 * Names with a secret-looking word that hold no secret: where one is (a path: `CAP_VERIFY_KEY_FILE`,
 * `keyFile`) or what a key is called (`fileHashMetaKey`). The secret read from such a file is
 * kept under its own name (`capSigningKey`), which stays redacted.
 */
const NOT_SECRET_RE = /(?:_FILE|File|MetaKey)$/;

/** True for a variable or field whose value must not be logged (an API key, password, token). */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY_RE.test(key) && !NOT_SECRET_RE.test(key);
}

/**
 * Validates `env` against `schema`. Empty strings count as unset, so `FOO=` in a
 * compose file falls back to the default instead of failing validation.
 * Throws ConfigError with a one-line message naming every bad variable.
 */
export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv | Record<string, string | undefined>): z.infer<S> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') clean[k] = v;
  const res = schema.safeParse(clean);
  if (res.success) return res.data;
  const parts = res.error.issues.map((issue) => describeIssue(issue, clean));
  throw new ConfigError(`invalid config: ${[...new Set(parts)].join('; ')}`);
}

function describeIssue(issue: z.core.$ZodIssue, env: Record<string, string>): string {
  const name = issue.path.map(String).join('.') || '(env)';
  const raw = issue.path.length > 0 ? env[String(issue.path[0])] : undefined;
  let problem: string;
  if (issue.code === 'invalid_type' && raw === undefined) problem = 'is required';
  else if (issue.code === 'invalid_value') problem = `must be one of ${issue.values.map(String).join('|')}`;
  else if (issue.code === 'custom') problem = issue.message;
  else problem = `is invalid: ${issue.message}`;
  const got = raw === undefined ? '' : ` (got ${isSecretKey(name) ? '"<redacted>"' : JSON.stringify(truncate(redactUserinfo(raw)))})`;
  return oneLine(`${name} ${problem}${got}`);
}

/** `redis://:pw@host` → `redis://<redacted>@host` in any value, parseable or not: a password is never echoed. */
function redactUserinfo(s: string): string {
  return s.replace(/(:\/\/)[^@/\s,]*@/g, '$1<redacted>@');
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/**
 * Runs `fn` (main's body). A ConfigError prints its one line to stderr and exits 2,
 * without a stack: an operator needs the variable name, not our call graph.
 * Any other startup error prints with its stack and exits 1.
 */
export function exitOnConfigError(fn: () => void | Promise<void>, exit: (code: number) => void = (c) => process.exit(c)): void {
  const fail = (err: unknown): void => {
    if (isConfigError(err)) {
      process.stderr.write(`${oneLine(err.message)}\n`);
      exit(2);
      return;
    }
    process.stderr.write(`fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    exit(1);
  };
  try {
    const r = fn();
    if (r instanceof Promise) r.catch(fail);
  } catch (err) {
    fail(err);
  }
}

/** Hides the password in a URL (redis://:pw@host, nats://user:pw@host); non-URLs pass through. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

function redactValue(key: string, value: unknown): unknown {
  if (isSecretKey(key) && value !== undefined && value !== null && value !== '') return '<redacted>';
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redactUrl(value) : value;
  if (Array.isArray(value)) return value.map((v) => redactValue(key, v));
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) return redactConfig(value as Record<string, unknown>);
  return value;
}

/** Copy of `config` safe to log: secret-looking keys redacted, URL passwords hidden. */
export function redactConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) out[k] = redactValue(k, v);
  return out;
}

/** Logs the effective config once at startup, without secrets. */
export function logConfig(logger: { info(msg: string, fields?: object): void }, config: object): void {
  logger.info('config loaded', { config: redactConfig(config as Record<string, unknown>) });
}
