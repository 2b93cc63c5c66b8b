import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
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

/**
 * The host of a `:port` listen address (P240): every local address, IPv6 and IPv4 (one dual-stack
 * socket) where the machine has IPv6, else every IPv4 one. `0.0.0.0:port` still means IPv4 only.
 */
export const ANY_HOST = '';

/** The host to pass to `listen()`: undefined for ANY_HOST, which Node binds to `::` (dual stack), or `0.0.0.0` without IPv6. */
export function listenHost(a: { host: string }): string | undefined {
  return a.host === ANY_HOST ? undefined : a.host;
}

/** An address as an operator writes it: `:port` for any host, brackets around an IPv6 host. */
export function formatAddr(a: { host: string; port: number }): string {
  if (a.host === ANY_HOST) return `:${a.port}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Parses "host:port", ":port" (ANY_HOST: dual stack, P240) or "[::1]:port". */
export function parseAddr(raw: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]*)):(\d{1,5})$/.exec(raw.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  return { host, port };
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
/** A duration that is only compared, never a timer's delay: up to 30 d (JOB_TTL's ceiling). */
export const zLongDuration = durationSchema(30 * DAY_MS, '30d');
/** JOB_TTL (D45) of the gateway and the scheduler: a record lifetime, never a timer; 1 m to 30 d, default 7 d. */
export const zJobTtl = zLongDuration
  .refine((ms) => ms >= 60_000, { message: 'must be between 1m and 30d' })
  .default(7 * DAY_MS);
/**
 * DLQ_TTL (P238) of the gateway and the scheduler: how long a dead letter stays listed and
 * retryable, and with it the dead job's record (P74); 1 h to 30 d, default D45's 30 d.
 */
export const zDlqTtl = zLongDuration
  .refine((ms) => ms >= 3_600_000, { message: 'must be between 1h and 30d' })
  .default(30 * DAY_MS);

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

/** "host:port" | ":port" → {host, port}; ":8081" binds every address, IPv6 and IPv4 (ANY_HOST, P240). */
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

/** Whether the user and password of URL `v` (if it parses) decode: the Redis client decodes them and throws URIError on a bad %-escape. */
function userinfoDecodes(v: string): boolean {
  try {
    const u = new URL(v);
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
    return true;
  } catch (err) {
    return !(err instanceof URIError);
  }
}

const isRedis = (u: string): boolean => /^redis:\/\//i.test(u);
const isRediss = (u: string): boolean => /^rediss:\/\//i.test(u);

/** TLS to Redis: REDIS_URL, or in cluster mode any entry of REDIS_CLUSTER_ADDRESSES, is rediss://. */
function redisTlsAsked(url: string, entries: readonly string[]): boolean {
  return isRediss(url) || entries.some(isRediss);
}

const zHostPortList = zCsv.superRefine((list, ctx) => {
  // The cluster client takes its user and password from REDIS_URL, for every node: credentials
  // here would be dropped (and an entry's userinfo was once read as part of its host). Checked
  // first: a password with a comma in it splits into entries, and naming the bad one echoed a
  // piece of it (P299).
  if (list.some((a) => a.includes('@'))) {
    ctx.addIssue({ code: 'custom', message: 'entries carry no user or password: put them in REDIS_URL (redis://:<password>@<any node>:6379), whose credentials the cluster client sends to every node' });
    return;
  }
  const bad = list.find((a) => parseAddr(a) === undefined && !isUrlWithScheme(a, ['redis', 'rediss']));
  if (bad !== undefined) {
    ctx.addIssue({ code: 'custom', message: `must be a comma list of host:port (bad entry ${JSON.stringify(bad)})` });
    return;
  }
  // One client for every node: TLS is all or nothing, so entries may not say both.
  if (list.some(isRedis) && list.some(isRediss)) {
    ctx.addIssue({ code: 'custom', message: 'mixes redis:// and rediss:// entries: the cluster client uses TLS for every node or for none' });
  }
});

const REDIS_TLS_VARS = ['REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE'] as const;

/** Rules between common variables, checked once each is valid on its own. */
function commonCrossProblems(env: unknown): string[] {
  const e = env as Partial<Record<'REDIS_URL' | 'REDIS_CLUSTER_ADDRESSES' | (typeof REDIS_TLS_VARS)[number], unknown>>;
  if (!('REDIS_URL' in e)) return [];
  const entries = (Array.isArray(e.REDIS_CLUSTER_ADDRESSES) ? (e.REDIS_CLUSTER_ADDRESSES as unknown[]) : []).filter((u): u is string => typeof u === 'string');
  const url = typeof e.REDIS_URL === 'string' ? e.REDIS_URL : '';
  // A rediss:// REDIS_URL asks for TLS to every node, which an entry written redis:// contradicts.
  if (isRediss(url) && entries.some(isRedis)) {
    return ['REDIS_URL is rediss:// but REDIS_CLUSTER_ADDRESSES has redis:// entries: the cluster client uses TLS for every node or for none'];
  }
  const tlsVar = REDIS_TLS_VARS.find((v) => e[v] !== undefined);
  // The TLS files alone would have been ignored: the connection stays plain text without rediss://.
  if (tlsVar !== undefined && !redisTlsAsked(url, entries)) return [`${tlsVar} is set but REDIS_URL is not rediss://: write rediss:// to connect to Redis with TLS`];
  return [];
}

/** What a read of a file named by a variable failed with: the errno code (ENOENT, EACCES, EISDIR) or the message. */
function readFailure(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : errorText(err);
}

/** The text of the file a variable names; throws `cannot read "<path>": ENOENT` (the variable's line). */
function readNamedFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${JSON.stringify(path)}: ${readFailure(err)}`);
  }
}

/** The PEM blocks of `type` in `text` (a CA bundle has several certificates). */
function pemBlocks(text: string, type: string): string[] {
  const re = new RegExp(`-----BEGIN ${type}-----[\\s\\S]*?-----END ${type}-----`, 'g');
  return text.match(re) ?? [];
}

/** Reads the PEM certificate(s) at `path` (a CA bundle or a client certificate); throws naming the problem. */
function checkCertFile(path: string): void {
  const text = readNamedFile(path);
  const certs = pemBlocks(text, 'CERTIFICATE');
  if (certs.length === 0) throw new Error(`${JSON.stringify(path)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  // A bundle caught mid-write (a renewal replacing it) ends in a BEGIN without its END: its whole
  // blocks parse, and the client would start trusting only part of the CAs (or none of the new one).
  const begun = text.split('-----BEGIN CERTIFICATE-----').length - 1;
  if (begun !== certs.length) throw new Error(`${JSON.stringify(path)} holds a PEM certificate cut short (${begun} BEGIN CERTIFICATE lines, ${certs.length} whole certificates): was it caught mid-write?`);
  for (const pem of certs) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new Error(`${JSON.stringify(path)} holds a certificate that does not parse: ${errorText(err)}`);
    }
  }
}

/** Reads the unencrypted PEM private key at `path`; throws naming the problem (never the key). */
function checkKeyFile(path: string): void {
  const text = readNamedFile(path);
  try {
    createPrivateKey(text);
  } catch {
    throw new Error(`${JSON.stringify(path)} holds no unencrypted PEM private key`);
  }
}

/**
 * The text of a NATS credentials file (`nsc generate creds`: the user JWT and the user's nkey
 * seed, each between dashed lines), read once at start; throws naming the problem, never the seed.
 */
function readNatsCreds(path: string): string {
  const text = readNamedFile(path);
  // The two blocks nats.js's credsAuthenticator takes: the JWT first, then the seed.
  const [jwt = '', seed = ''] = [...text.matchAll(/-{3,}[^\n]*-{3,}\r?\n\s*(\S+)\s*\r?\n\s*-{3,}[^\n]*-{3,}/g)].map((m) => m[1] ?? '');
  if (jwt.split('.').length !== 3 || !/^SU[A-Z2-7]+$/.test(seed)) {
    throw new Error(`${JSON.stringify(path)} is not a NATS credentials file (a user JWT block, then a user nkey seed block)`);
  }
  return text;
}

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** CONTRACT §1 common env with its defaults. Extend it per app: `commonEnvSchema.extend({...})`. */
export const commonEnvSchema = z.object({
  REDIS_URL: zUrl(['redis', 'rediss']).refine(userinfoDecodes, { message: 'has a user or password with a bad %-escape (write a literal % as %25)' }).default('redis://127.0.0.1:6379'),
  REDIS_CLUSTER_ADDRESSES: zHostPortList,
  REDIS_POOL_SIZE: zPositiveInt.default(20),
  REDIS_MIN_IDLE_CONNS: zNonNegativeInt.default(5),
  /** TLS to Redis (redisConnectionConfig; needs rediss://): the CA that signed the servers' certificates (else the system CAs). */
  REDIS_TLS_CA_FILE: zCheckedString(checkCertFile).optional(),
  /** A client certificate for a Redis that verifies clients (`tls-auth-clients yes`), with REDIS_TLS_KEY_FILE. */
  REDIS_TLS_CERT_FILE: zCheckedString(checkCertFile).optional(),
  REDIS_TLS_KEY_FILE: zCheckedString(checkKeyFile).optional(),
  NATS_URL: zUrlList(['nats', 'tls', 'ws', 'wss']).default(['nats://127.0.0.1:4222']),
  /** Each NATS connect attempt's budget (DNS, TCP, TLS, login; natsConnectionConfig, P265); unset: the bus's 3 s. */
  NATS_CONNECT_TIMEOUT: zDuration.refine((ms) => ms >= 100 && ms <= 60_000, { message: 'must be between 100ms and 60s' }).optional(),
  // NATS login (natsConnectionConfig): user and password in NATS_URL or here, a token, or a creds file.
  NATS_USER: z.string().optional(),
  /** Or NATS_PASSWORD_FILE (COMMON_SECRET_FILES). */
  NATS_PASSWORD: z.string().optional(),
  /** Or NATS_TOKEN_FILE (COMMON_SECRET_FILES). */
  NATS_TOKEN: z.string().optional(),
  /** The file REDIS_URL was read from (loadConfig): the Redis client reads its user and password again at each connect (P128). */
  REDIS_URL_FILE: z.string().optional(),
  /** The files NATS_PASSWORD / NATS_TOKEN were read from (loadConfig): the NATS client reads them again at each reconnect. */
  NATS_PASSWORD_FILE: z.string().optional(),
  NATS_TOKEN_FILE: z.string().optional(),
  /** A NATS .creds file (user JWT + nkey seed): its path, read and checked at start, read again at each reconnect. */
  NATS_CREDS_FILE: zCheckedString(readNatsCreds).optional(),
  /** TLS to NATS: the CA that signed the servers' certificates (else the system CAs). */
  NATS_TLS_CA_FILE: zCheckedString(checkCertFile).optional(),
  /** A client certificate for servers that verify clients (with NATS_TLS_KEY_FILE). */
  NATS_TLS_CERT_FILE: zCheckedString(checkCertFile).optional(),
  NATS_TLS_KEY_FILE: zCheckedString(checkKeyFile).optional(),
  /** Optional: callers default it with `defaultInstanceId(service)`. */
  CORDUM_INSTANCE_ID: z.string().optional(),
  CORDUM_LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
});
export type CommonEnv = z.infer<typeof commonEnvSchema>;

/**
 * Common variables whose value may instead be read from a file (a mounted secret), named by the
 * `*_FILE` variable: `REDIS_URL_FILE` holds what REDIS_URL would. Setting both is a config
 * error. loadConfig reads the file (trailing line breaks dropped) before validation, so the value
 * is checked as the variable's own; apps add theirs with `loadConfig(schema, env, { secretFiles })`.
 */
export const COMMON_SECRET_FILES: Readonly<Record<string, string>> = {
  REDIS_URL: 'REDIS_URL_FILE',
  NATS_PASSWORD: 'NATS_PASSWORD_FILE',
  NATS_TOKEN: 'NATS_TOKEN_FILE',
};

/** TLS client files (PEM), checked at start: the CA bundle to verify servers with, a client certificate and its key. */
export interface TlsFilesConfig {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** TLS to NATS: files checked at start, read again by the NATS client at each (re)connect. */
export type NatsTlsConfig = TlsFilesConfig;

/**
 * Where NATS is and how to log in, as @cordum/bus connectBus takes it (`{...config.nats, name,
 * logger}`): the servers without any `user:password@`, and at most one way to log in. The
 * secret fields are named so that redactConfig hides them.
 */
export interface NatsConnectionConfig {
  servers: string[];
  user?: string;
  password?: string;
  token?: string;
  /** The text of a NATS .creds file. */
  credentials?: string;
  /** Where the secret above came from, when a file: the NATS client reads it again at each reconnect. */
  passwordFile?: string;
  tokenFile?: string;
  credentialsFile?: string;
  /** Set: TLS is required (a `tls://` server, or any NATS_TLS_* variable). */
  tls?: NatsTlsConfig;
  /** NATS_CONNECT_TIMEOUT: each connect attempt's budget (the bus's 3 s when unset). */
  connectTimeoutMs?: number;
}

type NatsEnv = Pick<CommonEnv, 'NATS_URL' | 'NATS_USER' | 'NATS_PASSWORD' | 'NATS_TOKEN' | 'NATS_CREDS_FILE' | 'NATS_TLS_CA_FILE' | 'NATS_TLS_CERT_FILE' | 'NATS_TLS_KEY_FILE'> &
  Partial<Pick<CommonEnv, 'NATS_PASSWORD_FILE' | 'NATS_TOKEN_FILE' | 'NATS_CONNECT_TIMEOUT'>>;

type UrlLogin = { kind: 'none' } | { kind: 'user'; user: string; password: string } | { kind: 'token'; token: string };

/**
 * `nats://user:password@host` → a user and password; `nats://token@host` → a token (the NATS
 * clients' convention); percent-escapes decoded. The server is returned without them: nats.js
 * drops a URL's userinfo, so it must travel as options.
 */
function splitNatsUrl(raw: string): { server: string; login: UrlLogin } {
  const u = new URL(raw); // zUrlList checked it parses
  if (u.username === '' && u.password === '') return { server: raw, login: { kind: 'none' } };
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new ConfigError('invalid config: NATS_URL has a user or password with a bad %-escape');
    }
  };
  const user = decode(u.username);
  const password = decode(u.password);
  u.username = '';
  u.password = '';
  const server = u.toString();
  if (password !== '') {
    if (user === '') throw new ConfigError('invalid config: NATS_URL has a password without a user (write nats://user:password@host, or nats://token@host for a token)');
    return { server, login: { kind: 'user', user, password } };
  }
  return { server, login: { kind: 'token', token: user } };
}

/**
 * The NATS connection of a service or worker from the common env: NATS_URL without userinfo,
 * the login from NATS_URL's `user:password@` (every entry must carry the same, or none) or
 * NATS_USER + NATS_PASSWORD(_FILE), NATS_TOKEN(_FILE), NATS_CREDS_FILE, and TLS from a `tls://`
 * entry or NATS_TLS_*. More than one way to log in, or half of a pair, is a ConfigError.
 */
export function natsConnectionConfig(e: NatsEnv): NatsConnectionConfig {
  const bad = (why: string): ConfigError => new ConfigError(`invalid config: ${why}`);
  const split = e.NATS_URL.map(splitNatsUrl);
  const servers = split.map((s) => s.server);
  const logins = new Set(split.map((s) => JSON.stringify(s.login)));
  if (logins.size > 1) throw bad('NATS_URL entries carry different credentials: give every entry the same user:password@ (or none, and set NATS_USER and NATS_PASSWORD)');
  const urlLogin = split[0]?.login ?? { kind: 'none' };

  const ways: string[] = [];
  if (urlLogin.kind === 'user') ways.push('a user:password in NATS_URL');
  if (urlLogin.kind === 'token') ways.push('a token in NATS_URL');
  if (e.NATS_USER !== undefined || e.NATS_PASSWORD !== undefined) ways.push(e.NATS_USER !== undefined ? 'NATS_USER' : 'NATS_PASSWORD(_FILE)');
  if (e.NATS_TOKEN !== undefined) ways.push('NATS_TOKEN(_FILE)');
  if (e.NATS_CREDS_FILE !== undefined) ways.push('NATS_CREDS_FILE');
  if (ways.length > 1) throw bad(`${ways.join(' and ')} are set together: log in to NATS one way (a user and password, a token, or NATS_CREDS_FILE)`);
  if (e.NATS_USER !== undefined && e.NATS_PASSWORD === undefined) throw bad('NATS_USER is set without NATS_PASSWORD or NATS_PASSWORD_FILE');
  if (e.NATS_USER === undefined && e.NATS_PASSWORD !== undefined) throw bad('NATS_PASSWORD(_FILE) is set without NATS_USER');

  const out: NatsConnectionConfig = { servers };
  if (e.NATS_CONNECT_TIMEOUT !== undefined) out.connectTimeoutMs = e.NATS_CONNECT_TIMEOUT;
  if (urlLogin.kind === 'user') Object.assign(out, { user: urlLogin.user, password: urlLogin.password });
  if (urlLogin.kind === 'token') out.token = urlLogin.token;
  if (e.NATS_USER !== undefined) Object.assign(out, { user: e.NATS_USER, password: e.NATS_PASSWORD }, e.NATS_PASSWORD_FILE !== undefined ? { passwordFile: e.NATS_PASSWORD_FILE } : {});
  if (e.NATS_TOKEN !== undefined) Object.assign(out, { token: e.NATS_TOKEN }, e.NATS_TOKEN_FILE !== undefined ? { tokenFile: e.NATS_TOKEN_FILE } : {});
  if (e.NATS_CREDS_FILE !== undefined) Object.assign(out, { credentials: readNatsCreds(e.NATS_CREDS_FILE), credentialsFile: e.NATS_CREDS_FILE });

  const { NATS_TLS_CA_FILE: caFile, NATS_TLS_CERT_FILE: certFile, NATS_TLS_KEY_FILE: keyFile } = e;
  const tls = tlsFiles('NATS', caFile, certFile, keyFile);
  if (tls !== undefined || e.NATS_URL.some((u) => /^tls:\/\//i.test(u))) out.tls = tls ?? {};
  return out;
}

/**
 * The TLS files of `<prefix>_TLS_*` as a client takes them, or undefined when none is set. A
 * client certificate needs its key and the key must be the certificate's (ConfigError otherwise).
 */
function tlsFiles(prefix: 'NATS' | 'REDIS', caFile: string | undefined, certFile: string | undefined, keyFile: string | undefined): TlsFilesConfig | undefined {
  const bad = (why: string): ConfigError => new ConfigError(`invalid config: ${why}`);
  if ((certFile === undefined) !== (keyFile === undefined)) throw bad(certFile === undefined ? `${prefix}_TLS_KEY_FILE is set without ${prefix}_TLS_CERT_FILE` : `${prefix}_TLS_CERT_FILE is set without ${prefix}_TLS_KEY_FILE`);
  if (certFile !== undefined && keyFile !== undefined) {
    // Both files were read and parsed by their schemas already.
    const cert = new X509Certificate(pemBlocks(readFileSync(certFile, 'utf8'), 'CERTIFICATE')[0] ?? '');
    if (!cert.checkPrivateKey(createPrivateKey(readFileSync(keyFile, 'utf8')))) throw bad(`${prefix}_TLS_KEY_FILE ${JSON.stringify(keyFile)} is not the key of the certificate in ${prefix}_TLS_CERT_FILE ${JSON.stringify(certFile)}`);
  }
  if (caFile === undefined && certFile === undefined) return undefined;
  return { ...(caFile !== undefined ? { caFile } : {}), ...(certFile !== undefined ? { certFile, keyFile } : {}) };
}

/** Where Redis is and how to reach it, as @cordum/redis createRedis takes it (`{...config.redis, name, events}`). */
export interface RedisConnectionConfig {
  /** REDIS_URL; in cluster mode only its user and password are used (for every node). */
  url: string;
  /** REDIS_URL_FILE when REDIS_URL came from it: the client reads its user and password again at each connect (P128). */
  urlFile?: string;
  clusterAddresses: string[];
  poolSize: number;
  minIdleConns: number;
  /**
   * Set: TLS to Redis, to every node of a cluster (REDIS_URL or a cluster entry is rediss://);
   * the CA and client certificate files of REDIS_TLS_*, read again at each connect (P126).
   */
  tls?: TlsFilesConfig;
}

type RedisEnv = Pick<CommonEnv, 'REDIS_URL' | 'REDIS_CLUSTER_ADDRESSES' | 'REDIS_POOL_SIZE' | 'REDIS_MIN_IDLE_CONNS' | 'REDIS_TLS_CA_FILE' | 'REDIS_TLS_CERT_FILE' | 'REDIS_TLS_KEY_FILE'> &
  Partial<Pick<CommonEnv, 'REDIS_URL_FILE'>>;

/**
 * The Redis connection of a service or worker from the common env. TLS when REDIS_URL (or, in
 * cluster mode, any entry of REDIS_CLUSTER_ADDRESSES) is rediss://, with REDIS_TLS_* (which
 * loadConfig refuses without rediss://).
 */
export function redisConnectionConfig(e: RedisEnv): RedisConnectionConfig {
  const out: RedisConnectionConfig = { url: e.REDIS_URL, clusterAddresses: e.REDIS_CLUSTER_ADDRESSES, poolSize: e.REDIS_POOL_SIZE, minIdleConns: e.REDIS_MIN_IDLE_CONNS };
  if (e.REDIS_URL_FILE !== undefined) out.urlFile = e.REDIS_URL_FILE;
  const tls = tlsFiles('REDIS', e.REDIS_TLS_CA_FILE, e.REDIS_TLS_CERT_FILE, e.REDIS_TLS_KEY_FILE);
  if (redisTlsAsked(e.REDIS_URL, e.REDIS_CLUSTER_ADDRESSES)) out.tls = tls ?? {};
  return out;
}

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
export interface LoadConfigOptions {
  /**
   * The schema's variables that may be read from a file instead, each with the variable naming
   * the file: `{ CORDUM_API_KEY: 'CORDUM_API_KEY_FILE' }`. COMMON_SECRET_FILES are always
   * included (for the variables the schema has).
   */
  secretFiles?: Readonly<Record<string, string>>;
}

/** The keys of an object schema (refined or not), or undefined for another kind of schema. */
function schemaKeys(schema: z.ZodType): Set<string> | undefined {
  return schema instanceof z.ZodObject ? new Set(Object.keys(schema.shape)) : undefined;
}

/**
 * Reads the `*_FILE` variables set in `env` into the variables they stand for. Returns the
 * problems (both set, unreadable, empty: one phrase each) and which variables came from a file.
 */
function readSecretFiles(env: Record<string, string>, files: Readonly<Record<string, string>>, keys: Set<string> | undefined): { problems: string[]; fromFile: Map<string, string>; unread: Set<string> } {
  const problems: string[] = [];
  const unread = new Set<string>();
  const fromFile = new Map<string, string>();
  for (const [name, fileVar] of Object.entries(files)) {
    const path = env[fileVar];
    if (path === undefined || (keys !== undefined && !keys.has(name))) continue;
    if (env[name] !== undefined) {
      problems.push(`${name} and ${fileVar} are both set: set one`);
      continue;
    }
    let value: string;
    try {
      // A secret file usually ends with a line break (echo, editors, kubectl create secret from a file).
      value = readFileSync(path, 'utf8').replace(/[\r\n]+$/, '');
    } catch (err) {
      problems.push(`${fileVar} cannot read ${JSON.stringify(path)}: ${readFailure(err)}`);
      unread.add(name);
      continue;
    }
    if (value === '') {
      problems.push(`${fileVar} names an empty file ${JSON.stringify(path)}`);
      unread.add(name);
      continue;
    }
    env[name] = value;
    fromFile.set(name, fileVar);
  }
  return { problems, fromFile, unread };
}

export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv | Record<string, string | undefined>, opts: LoadConfigOptions = {}): z.infer<S> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') clean[k] = v;
  const { problems, fromFile, unread } = readSecretFiles(clean, { ...COMMON_SECRET_FILES, ...opts.secretFiles }, schemaKeys(schema));
  const res = schema.safeParse(clean);
  if (res.success && problems.length === 0) {
    const cross = commonCrossProblems(res.data);
    if (cross.length === 0) return res.data;
    throw new ConfigError(`invalid config: ${cross.join('; ')}`);
  }
  // A variable whose file could not be read has its line already ("is required" would only repeat it).
  const issues = (res.error?.issues ?? []).filter((issue) => !unread.has(String(issue.path[0])));
  const parts = [...problems.map(oneLine), ...issues.map((issue) => describeIssue(issue, clean, fromFile))];
  throw new ConfigError(`invalid config: ${[...new Set(parts)].join('; ')}`);
}

function describeIssue(issue: z.core.$ZodIssue, env: Record<string, string>, fromFile: Map<string, string>): string {
  const name = issue.path.map(String).join('.') || '(env)';
  const raw = issue.path.length > 0 ? env[String(issue.path[0])] : undefined;
  const file = issue.path.length > 0 ? fromFile.get(String(issue.path[0])) : undefined;
  let problem: string;
  if (issue.code === 'invalid_type' && raw === undefined) problem = 'is required';
  else if (issue.code === 'invalid_value') problem = `must be one of ${issue.values.map(String).join('|')}`;
  else if (issue.code === 'custom') problem = issue.message;
  else problem = `is invalid: ${issue.message}`;
  // A value read from a secret file is never echoed, whatever its variable is called.
  const shown = isSecretKey(name) || file !== undefined ? '"<redacted>"' : JSON.stringify(truncate(redactUserinfo(raw ?? '')));
  // A message that already quotes the value (`not a URL: "http://k:50051"`) is not followed by it again.
  const got = raw === undefined || problem.includes(shown) ? '' : ` (got ${shown})`;
  return oneLine(`${name}${file === undefined ? '' : ` (read from ${file})`} ${problem}${got}`);
}

/**
 * `redis://:pw@host` → `redis://<redacted>@host` in any value, parseable or not: everything from the
 * scheme to the last `@` goes, so a password is never echoed, also one with a `/`, a `,` or a space
 * in it (P299: a comma or a space ended the redaction, and the rest of the password was printed),
 * or in a scheme-less entry (`user:pw@host:port`). A comma list loses its earlier entries with it.
 */
function redactUserinfo(s: string): string {
  const at = s.lastIndexOf('@');
  if (at < 0) return s;
  const scheme = /^\s*[a-z][a-z0-9+.-]*:\/\//i.exec(s)?.[0] ?? '';
  return `${scheme}<redacted>${s.slice(at)}`;
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

/**
 * Hides the password in a URL (redis://:pw@host, nats://user:pw@host), and a userinfo without
 * one, which NATS reads as a token (nats://token@host → nats://***@host); non-URLs pass through.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '' && u.username === '') return url;
    if (u.password === '') u.username = '***';
    else u.password = '***';
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
