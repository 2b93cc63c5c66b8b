// The files a Redis connection is made with, read again at every connect (decisions.md P126,
// P128): the TLS CA bundle, certificate and key (REDIS_TLS_*), and the user and password of
// REDIS_URL_FILE. ioredis reads its options at each connect; these make the options it reads
// getters of the files, keeping the last good contents when a read cannot be used.
import { readFileSync } from 'node:fs';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext, type ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { Cluster } from 'ioredis';

/** TLS to Redis: the CA bundle the servers' certificates must chain to, and a client certificate and key for a Redis that verifies clients. */
export interface RedisTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** The PEM contents of one read of the TLS files. */
interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/**
 * Every PEM certificate block of `pem` (a CA bundle has several) is whole and parses; throws
 * naming `file`. A block cut short (a file caught mid-write) would be skipped by OpenSSL or fail
 * the connect, after this check had let it replace the last good contents.
 */
function checkCertificates(file: string, pem: Buffer): void {
  const text = pem.toString('utf8');
  const begun = text.split('-----BEGIN CERTIFICATE-----').length - 1;
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${file} holds no PEM certificate`);
  if (blocks.length !== begun) throw new Error(`${file} holds a PEM certificate cut short`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch {
      throw new Error(`${file} holds a certificate that does not parse`);
    }
  }
}

/**
 * Reads the TLS files and checks them as a connect will use them: every certificate of the CA
 * bundle and of the certificate file whole and parsing, the key the certificate's, and OpenSSL
 * taking the three (the secure context `tls.connect` makes). Throws otherwise.
 */
function readTlsFiles(tls: RedisTlsOptions): TlsMaterial {
  const m: TlsMaterial = {
    ...(tls.caFile !== undefined ? { ca: readFileSync(tls.caFile) } : {}),
    ...(tls.certFile !== undefined ? { cert: readFileSync(tls.certFile) } : {}),
    ...(tls.keyFile !== undefined ? { key: readFileSync(tls.keyFile) } : {}),
  };
  if (m.ca !== undefined) checkCertificates(tls.caFile ?? '', m.ca);
  if (m.cert !== undefined) {
    checkCertificates(tls.certFile ?? '', m.cert);
    if (m.key !== undefined && !new X509Certificate(m.cert).checkPrivateKey(createPrivateKey(m.key))) {
      throw new Error(`the key in ${tls.keyFile ?? ''} is not the key of the certificate in ${tls.certFile ?? ''}`);
    }
  }
  createSecureContext(m);
  return m;
}

/** Raised (through the client's error events) when the TLS files cannot be used at a connect; the last good ones are used instead. */
export class RedisTlsFilesError extends Error {
  override readonly name = 'RedisTlsFilesError';
}

/** Raised (through the client's error events) when REDIS_URL_FILE cannot be used at a connect; the last good user and password are used instead. */
export class RedisUrlFileError extends Error {
  override readonly name: string = 'RedisUrlFileError';
}

/** Reported (through the client's error events) when REDIS_URL_FILE points elsewhere than at start: its user and password are used, the rest needs a restart. */
export class RedisUrlFileMovedError extends RedisUrlFileError {
  override readonly name = 'RedisUrlFileMovedError';
}

/**
 * `read()` done again at most once per event-loop turn (one connect reads several fields), from
 * the first call on; a read that throws keeps the last good value and goes to `unusable`. The
 * first read, here, throws instead.
 */
export function liveRead<T>(read: () => T, unusable: (err: Error) => void): () => T {
  let good = read();
  let readThisTurn = true;
  const turnEnded = (): void => {
    readThisTurn = false;
  };
  setImmediate(turnEnded).unref();
  return () => {
    if (readThisTurn) return good;
    readThisTurn = true;
    setImmediate(turnEnded).unref();
    try {
      good = read();
    } catch (err) {
      unusable(err instanceof Error ? err : new Error(String(err)));
    }
    return good;
  };
}

/** `fields` of `target` become getters of the same fields of `current()`. */
function liveFields<T extends object>(target: object, fields: readonly (keyof T & string)[], current: () => T): void {
  for (const field of fields) Object.defineProperty(target, field, { enumerable: true, configurable: true, get: () => current()[field] });
}

/**
 * Node's TLS options for `tls`, whose `ca`, `cert` and `key` read their files again at each
 * connect (decisions.md P126): ioredis copies `tls` into the options of every `tls.connect`, the
 * first one and every reconnect, of a standalone client and of each cluster node (they share this
 * object), so a certificate rotated on disk (a Kubernetes Secret volume) is what the next
 * connection presents and trusts, with no restart. One read serves the three fields of a connect
 * (liveRead). Files that cannot be read or used (missing mid-update, a key that is not the
 * certificate's) keep the last good contents and are reported through `unusable`. The first
 * read, at creation, throws instead. A cluster's nodes are verified by the address the cluster
 * announces (an IP: the certificates need IP SANs).
 */
export function tlsConnectOptions(tls: RedisTlsOptions, unusable: (err: Error) => void): TlsConnectionOptions {
  const current = liveRead(() => readTlsFiles(tls), (err) => unusable(new RedisTlsFilesError(`TLS files unusable, the last good ones are used: ${err.message}`)));
  const first = current();
  const out: TlsConnectionOptions = {};
  liveFields(out, (['ca', 'cert', 'key'] as const).filter((f) => first[f] !== undefined), current);
  return out;
}

/** A URL's user and password, each absent when the URL has none. */
type Credentials = { username?: string; password?: string };

/**
 * The user and password of `url`: REDIS_URL's, which a cluster client sends to every node (one
 * Redis user for the whole cluster, as `requirepass`/`masterauth` or an ACL user on every node
 * set it up), and REDIS_URL_FILE's at each connect. Nothing when `url` is empty or carries none.
 * `redis://:pw@…` is the default user, `redis://name:pw@…` an ACL user; percent-escapes are
 * decoded as ioredis does for a standalone URL (a bad one throws URIError).
 */
export function urlCredentials(url: string): Credentials {
  if (url === '') return {};
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return {};
  }
  if (u.username === '' && u.password === '') return {};
  return {
    ...(u.username !== '' ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}),
  };
}

/** Where a Redis URL points, without its credentials: scheme, host, port and database; undefined when it does not parse. */
export function redisTarget(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
}

/**
 * The user and password of the URL in `file` (REDIS_URL_FILE); throws a message that never holds
 * the file's text. A URL that points elsewhere than `startTarget` (redisTarget of the URL the
 * process started with: another host, port, database or scheme) still gives its user and
 * password, and `moved` says so: the connection stays where the process started, so the change
 * needs a restart.
 */
export function readUrlFileCredentials(file: string, startTarget: string | undefined, moved: (err: Error) => void): Credentials {
  const text = readFileSync(file, 'utf8').replace(/[\r\n]+$/, '');
  const target = redisTarget(text);
  if (target === undefined) throw new Error(`${file} does not hold a URL`);
  if (!/^rediss?:\/\//.test(target)) throw new Error(`${file} does not hold a redis:// or rediss:// URL`);
  let credentials: Credentials;
  try {
    credentials = urlCredentials(text);
  } catch {
    throw new Error(`${file} holds a bad %-escape in its user or password`);
  }
  if (startTarget !== undefined && target !== startTarget) {
    moved(new RedisUrlFileMovedError(`REDIS_URL_FILE now points at ${target}, not ${startTarget} as at start: only its user and password are used; restart to connect there`));
  }
  return credentials;
}

/**
 * The user and password ioredis logs in with at each connect (`options.username` / `.password`,
 * read by every connect, also a reconnect), read again from REDIS_URL_FILE (P128): a password
 * rotated in a Kubernetes Secret volume is used from the next reconnect on, with no restart.
 * No user or password = none (ioredis then sends `AUTH <password>` or nothing).
 */
export function credentialsFollow(target: object, current: () => Credentials): void {
  liveFields(target, ['username', 'password'], current);
}

/** ioredis's Cluster keeps the options it makes node clients from here; not public API, so checked at run time. */
export function nodeOptionsOf(cluster: Cluster): object | undefined {
  const pool = (cluster as unknown as { connectionPool?: { redisOptions?: unknown } }).connectionPool;
  return typeof pool?.redisOptions === 'object' && pool.redisOptions !== null ? pool.redisOptions : undefined;
}
