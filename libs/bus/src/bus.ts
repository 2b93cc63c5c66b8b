import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { connect, credsAuthenticator, ErrorCode, Events, NatsError, tokenAuthenticator, usernamePasswordAuthenticator, type ConnectionOptions, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { BusError, isTransientJsError, jsApiErrCode, natsCode } from './errors';
import { monoNow } from './mono';
import { flushOncePerTurn, sendBufferResets } from './flush';
import { busMetrics, type BusMetrics } from './metrics';
import { JsPublisher } from './js-publisher';
import { publishWithRetry, type PublishDeps } from './publish';
import { PullConsumer } from './consumer';
import { clusterSizeHint, ensureSysStream } from './streams';
import { STREAM_SYS, durableName } from './subjects';
import type { Bus, BusLogger, BusOptions, ConsumeOptions, Consumer, ConsumerBacklog, NatsConnectOptions, Subscription } from './types';

const DRAIN_TIMEOUT_MS = 5_000;
/** How long ensureStreams waits for a JetStream that is not ready (a cluster electing, a busy one). */
export const ENSURE_STREAMS_BUDGET_MS = 60_000;

/** JetStream API err_code of a message get that found nothing. */
const JS_NO_MESSAGE_FOUND = 10037;
/** JetStream API err_codes of a server whose JetStream is on, but not for this account / not enabled. */
const JS_NOT_ENABLED_FOR_ACCOUNT = 10039;
const JS_NOT_ENABLED = 10076;

type State = 'open' | 'closing' | 'closed';

/** A refused login at reconnects is logged at most this often. */
const REFUSAL_REPORT_EVERY_MS = 30_000;

/** Reports the first of a run of one failure, then at most once per `everyMs`, with the count not reported. */
class RepeatThrottle {
  private last: { what: string; at: number } | undefined;
  private suppressed = 0;
  constructor(private readonly everyMs: number) {}
  failed(what: string, report: (suppressed: number) => void): void {
    const now = monoNow();
    if (this.last && this.last.what === what && now - this.last.at < this.everyMs) {
      this.suppressed++;
      return;
    }
    this.last = { what, at: now };
    const n = this.suppressed;
    this.suppressed = 0;
    report(n);
  }
  reset(): void {
    this.last = undefined;
    this.suppressed = 0;
  }
}

class NatsBus implements Bus {
  private state: State = 'open';
  private isConnected = true;
  private readonly consumers = new Set<PullConsumer<unknown>>();
  private closePromise: Promise<void> | undefined;
  private flushing: Promise<void> | undefined;
  private readonly statusLoop: Promise<void>;
  private readonly statusIter: ReturnType<NatsConnection['status']>;
  private readonly publisher: JsPublisher;
  private readonly publishDeps: PublishDeps;
  private readonly refusals = new RepeatThrottle(REFUSAL_REPORT_EVERY_MS);
  private readonly connectionListeners = new Set<(connected: boolean) => void>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly opts: BusOptions,
    private readonly log: BusLogger,
    private readonly metrics: BusMetrics,
    /** sendBufferResets(nc): null when unknown, and flush() then defers nothing (P158). */
    private readonly resets: (() => number) | null,
  ) {
    this.publisher = new JsPublisher(nc);
    this.publishDeps = { send: (s, d, id, t) => this.publisher.publish(s, d, id, t), metrics, isClosed: () => this.state !== 'open' };
    this.statusIter = nc.status();
    this.statusLoop = this.watchStatus();
  }

  get connected(): boolean {
    return this.state === 'open' && this.isConnected && !this.nc.isClosed();
  }

  private async watchStatus(): Promise<void> {
    // The status iterator does not end by itself when the connection closes; doClose() stops it.
    for await (const s of this.statusIter) {
      // Only these three matter here; the others (ping timer, LDM, cluster updates) are informational.
      if (s.type === Events.Disconnect) {
        this.isConnected = false;
        // Replies to publishes in flight may be lost with the connection: retry them now (D43).
        this.publisher.failAll(ErrorCode.Disconnect);
        if (this.state === 'open') this.log.warn('bus: disconnected from NATS', { server: redactServers(String(s.data)) });
        this.tellConnection(false);
      } else if (s.type === Events.Reconnect) {
        this.isConnected = true;
        this.refusals.reset();
        this.log.info('bus: reconnected to NATS', { server: redactServers(String(s.data)) });
        this.tellConnection(true);
      } else if (s.type === Events.Error) {
        const err = redactServers(String(s.data));
        if (err === ErrorCode.AuthorizationViolation || err === ErrorCode.AuthenticationExpired) {
          // Refused at a reconnect (a secret rotated on the server first): nats.js keeps trying
          // (keepRetryingRefusedLogins), about once a second, so this is said once per 30 s.
          this.refusals.failed(err, (suppressed) => this.log.warn('bus: NATS refused the login at a reconnect, retrying (a rotated secret not yet in its file?)', { err, login: loginOf(this.opts), ...(suppressed > 0 ? { suppressed } : {}) }));
        } else {
          this.log.error('bus: NATS async error', { err });
        }
      }
    }
    this.isConnected = false;
  }

  onConnection(listener: (connected: boolean) => void): () => void {
    this.connectionListeners.add(listener);
    return () => void this.connectionListeners.delete(listener);
  }

  private tellConnection(connected: boolean): void {
    if (this.state !== 'open') return;
    for (const l of [...this.connectionListeners]) {
      try {
        l(connected);
      } catch (err) {
        this.log.error('bus: a connection listener failed', { err: err instanceof Error ? err.message : String(err) });
      }
    }
  }

  private assertOpen(op: string): void {
    if (this.state !== 'open') throw new BusError('bus_closed', `${op}: bus is ${this.state}`);
  }

  /**
   * Creates or updates CORDUM_SYS. A JetStream cluster that is still electing its meta leader, or
   * too busy to answer within the request timeout (several services creating an R3 stream at
   * once on a loaded machine), is waited for: transient failures are retried with backoff for up
   * to ENSURE_STREAMS_BUDGET_MS before the error reaches the caller (whose start then fails).
   */
  async ensureStreams(budgetMs = ENSURE_STREAMS_BUDGET_MS): Promise<void> {
    this.assertOpen('ensureStreams');
    const deadline = monoNow() + budgetMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await ensureSysStream(this.jsm, clusterSizeHint(this.nc, this.opts.servers.length), this.log);
        return;
      } catch (err) {
        const delayMs = Math.min(5_000, 250 * 2 ** (attempt - 1));
        if (!isTransientJsError(err instanceof BusError ? err.cause : err) || monoNow() + delayMs > deadline || this.state !== 'open') throw err;
        this.log.warn('bus: JetStream not ready, retrying the stream setup', { stream: 'CORDUM_SYS', attempt, retry_in_ms: delayMs, err: String(err) });
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  publish(subject: string, data: Uint8Array, opts: { msgId?: string } = {}): Promise<void> {
    return publishWithRetry(this.publishDeps, subject, data, opts.msgId);
  }

  publishCore(subject: string, data: Uint8Array): void {
    this.assertOpen('publishCore');
    this.nc.publish(subject, data);
  }

  flush(): Promise<void> {
    this.assertOpen('flush');
    const resets = this.resets;
    if (resets === null) return this.nc.flush();
    // Every flush() of one event-loop turn shares one PING/PONG (issue 7: the scheduler flushes
    // after each dispatch, D2). The PING is queued behind every publish made before any of these
    // calls, so its PONG proves all of them reached the server, unless nats.js emptied its send
    // buffer in between (a connection attempt of a reconnect, run from an I/O callback of this
    // turn): the publishes are gone and the PING would go to the new connection, whose PONG
    // proves nothing. That flush fails as nats.js's own would have (P158).
    this.flushing ??= ((at: number) =>
      new Promise<void>((resolve, reject) => {
        setImmediate(() => {
          this.flushing = undefined;
          if (resets() !== at) reject(NatsError.errorForCode(ErrorCode.Disconnect));
          else this.nc.flush().then(resolve, reject);
        });
      }))(resets());
    return this.flushing;
  }

  async consume<T>(o: ConsumeOptions<T>): Promise<Consumer> {
    this.assertOpen('consume');
    const c = new PullConsumer<T>({ js: this.js, jsm: this.jsm, logger: this.log, metrics: this.metrics, recreateStream: () => this.ensureStreams() }, o);
    await c.ensure();
    // The set holds consumers of any payload type; only stop() is called through it.
    this.consumers.add(c as PullConsumer<unknown>);
    c.start();
    return {
      stop: async () => {
        await c.stop();
        this.consumers.delete(c as PullConsumer<unknown>);
      },
    };
  }

  async backlog(queue: string, subject: string): Promise<ConsumerBacklog> {
    this.assertOpen('backlog');
    const info = await this.jsm.consumers.info(STREAM_SYS, durableName(queue, subject));
    const backlog: ConsumerBacklog = { undelivered: info.num_pending, unacked: info.num_ack_pending, newestDeliveredAt: null };
    const seq = info.delivered.stream_seq;
    if (seq === 0 || backlog.undelivered + backlog.unacked === 0) return backlog;
    backlog.newestDeliveredAt = await this.storedAt(seq);
    return backlog;
  }

  async unackedSince(queue: string, subject: string): Promise<number | null> {
    this.assertOpen('unackedSince');
    const info = await this.jsm.consumers.info(STREAM_SYS, durableName(queue, subject));
    if (info.num_ack_pending === 0) return null;
    const seq = info.ack_floor.stream_seq;
    return seq === 0 ? 0 : ((await this.storedAt(seq)) ?? 0);
  }

  /** When CORDUM_SYS stored message `seq` (epoch ms), null when the stream dropped it (MaxAge, MaxBytes); other errors are the caller's. */
  private async storedAt(seq: number): Promise<number | null> {
    try {
      return (await this.jsm.streams.getMessage(STREAM_SYS, { seq })).time.getTime();
    } catch (err) {
      if (jsApiErrCode(err) !== JS_NO_MESSAGE_FOUND) throw err;
      return null;
    }
  }

  async streamAnswers(timeoutMs: number): Promise<boolean> {
    if (!this.connected) return false;
    try {
      // The same JetStream API request jsm.streams.info() makes, with this call's own timeout. In a
      // cluster its answer also says whether the stream has a leader with a quorum (hasQuorum).
      const reply = await this.nc.request(`$JS.API.STREAM.INFO.${STREAM_SYS}`, undefined, { timeout: timeoutMs });
      return hasQuorum(JSON.parse(new TextDecoder().decode(reply.data)));
    } catch {
      return false;
    }
  }

  subscribe(subject: string, handler: (data: Uint8Array, subject: string) => void, opts: { queue?: string } = {}): Subscription {
    this.assertOpen('subscribe');
    const sub = this.nc.subscribe(subject, {
      ...(opts.queue ? { queue: opts.queue } : {}),
      callback: (err, msg) => {
        if (err) {
          this.log.error('bus: subscription error', { subject, err: err.message });
          return;
        }
        try {
          handler(msg.data, msg.subject);
        } catch (e) {
          // A broadcast handler bug must not tear down the subscription.
          this.log.error('bus: subscription handler threw', { subject, err: (e as Error).message });
        }
      },
    });
    return { unsubscribe: () => { if (!sub.isClosed()) sub.unsubscribe(); } };
  }

  close(): Promise<void> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<void> {
    this.state = 'closing';
    await Promise.allSettled([...this.consumers].map((c) => c.stop()));
    this.consumers.clear();
    if (!this.nc.isClosed()) {
      let t: NodeJS.Timeout | undefined;
      try {
        // drain() can wait on a server that is gone; bound it, then close hard.
        await Promise.race([this.nc.drain(), new Promise((_, rej) => (t = setTimeout(() => rej(new Error('drain timeout')), DRAIN_TIMEOUT_MS)))]);
      } catch (err) {
        this.log.warn('bus: drain failed, closing', { err: (err as Error).message });
      } finally {
        if (t) clearTimeout(t);
      }
      // nats.js's drain() also resolves without closing when its last flush fails (the server is
      // gone); the connection would then go on reconnecting, and hold the process open, for ever.
      if (!this.nc.isClosed()) await this.nc.close();
    }
    this.publisher.close();
    // nc.status() is typed as AsyncIterable but is a QueuedIterator at run time; stop() ends the loop.
    (this.statusIter as { stop?: () => void }).stop?.();
    await this.statusLoop;
    this.state = 'closed';
    this.isConnected = false;
  }
}

/**
 * `nats://user:pw@host` → `nats://<redacted>@host` in any text (a list, a message, a URL that
 * does not parse): what the bus logs or throws never carries a password or token.
 */
export function redactServers(text: string): string {
  return text.replace(/(:\/\/)[^@/\s,]*@/g, '$1<redacted>@');
}

/** How the connection logs in, for an error message: never the secret. */
function loginOf(o: NatsConnectOptions): string {
  if (o.credentials !== undefined) return 'a creds file';
  if (o.token !== undefined) return 'a token';
  if (o.user !== undefined) return `user ${JSON.stringify(o.user)}`;
  return 'no credentials';
}

/**
 * The nats.js options of `o`'s servers, login and TLS. A server URL with `user:password@` is
 * refused: nats.js drops it without a word, and the connect then fails with nothing but
 * "Authorization Violation" (service-kit natsConnectionConfig moves it into user/password).
 */
function natsConnectOptions(o: NatsConnectOptions): ConnectionOptions {
  const withLogin = o.servers.find((s) => /^[a-z][a-z0-9+.-]*:\/\/[^/]*@/i.test(s));
  if (withLogin !== undefined) {
    throw new BusError('bus_connect_failed', `NATS server ${redactServers(withLogin)} carries a user or password in its URL, which the NATS client ignores: pass them as user/password or token (natsConnectionConfig of @cordum/service-kit does so for NATS_URL)`);
  }
  const ways = [o.user !== undefined || o.password !== undefined, o.token !== undefined, o.credentials !== undefined].filter(Boolean).length;
  if (ways > 1) throw new BusError('bus_connect_failed', 'connectBus: give one way to log in to NATS (user and password, token, or credentials)');
  // Each secret through a function nats.js calls at every (re)connect: read again from its file
  // when there is one (the TLS files are read again by nats.js itself).
  const password = secretReader(o.password ?? '', o.passwordFile);
  const token = secretReader(o.token ?? '', o.tokenFile);
  // A creds file as it is (nats.js needs the line break after the seed's closing dashes), and only
  // a text nats.js can sign with: a bad one at a reconnect would close the connection for good.
  const creds = secretReader(o.credentials ?? '', o.credentialsFile, { asIs: true, usable: credsUsable });
  return {
    servers: o.servers,
    ...(o.user !== undefined ? { authenticator: usernamePasswordAuthenticator(o.user, password) } : {}),
    ...(o.token !== undefined ? { authenticator: tokenAuthenticator(token) } : {}),
    ...(o.credentials !== undefined ? { authenticator: credsAuthenticator(() => new TextEncoder().encode(creds())) } : {}),
    ...(o.tls !== undefined ? { tls: { ...o.tls } } : {}),
  };
}

/**
 * A secret as nats.js asks for it at each (re)connect. Without `file`: always `initial`. With
 * one: the file's text at each call (trailing line breaks dropped, as loadConfig reads a secret
 * file; `asIs`: kept), or the last good value while the file cannot be read, is empty or is not
 * `usable` (`initial` until a read succeeds). A Secret volume swaps its files by renaming a
 * directory, never half-written.
 */
export function secretReader(initial: string, file: string | undefined, opts: { asIs?: boolean; usable?: (text: string) => boolean } = {}): () => string {
  if (file === undefined) return () => initial;
  let last = initial;
  return () => {
    try {
      const raw = readFileSync(file, 'utf8');
      const text = opts.asIs ? raw : raw.replace(/[\r\n]+$/, '');
      if ((opts.asIs ? text.trim() : text) !== '' && (opts.usable?.(text) ?? true)) last = text;
    } catch {
      // keep the last good one
    }
    return last;
  };
}

/** Whether nats.js's credsAuthenticator can sign with `text` (a user JWT block, then a valid user nkey seed block). */
function credsUsable(text: string): boolean {
  try {
    credsAuthenticator(new TextEncoder().encode(text))('nonce');
    return true;
  } catch {
    return false;
  }
}

/**
 * After the first connect: a login refused at a reconnect is retried like any other failure
 * (nats.js gives up after two refusals of the same kind and closes the connection, so a secret
 * rotated on the server before its file left the replica unready until restarted). The first
 * connect still fails on a refused login, as a configuration error at start should. The option
 * is read by nats.js (2.29) at each refusal from the connection's options; false when the
 * client is not that shape (another nats.js version: a refusal then ends the connection).
 */
function keepRetryingRefusedLogins(nc: NatsConnection): boolean {
  const options = (nc as unknown as { protocol?: { options?: { ignoreAuthErrorAbort?: unknown } } }).protocol?.options;
  if (!options || typeof options.ignoreAuthErrorAbort !== 'boolean') return false;
  options.ignoreAuthErrorAbort = true;
  return true;
}

/**
 * P260: how soon a connection to a server that hangs (frozen, or a host gone silent: no TCP reset)
 * is given up. Two PINGs unanswered at 5 s (10–15 s; nats.js's 2 minutes, and our 10 s before,
 * took 20–30 s), and each connect attempt, the first reconnect included, waits 3 s for the
 * server's answer (nats.js's 20 s): nats.js tries the server it was on first, and the kernel of a
 * frozen one still accepts the TCP connection, so a client on a frozen node of a healthy cluster
 * took about 40 s to reach another node, answering 503 meanwhile. 3 s leaves a TLS handshake
 * across regions room.
 */
const NATS_PING_INTERVAL_MS = 5_000;
const NATS_CONNECT_TIMEOUT_MS = 3_000;
/** How long a first connect that waits for NATS runs before it logs that it is waiting, and how often it says so again. */
const FIRST_CONNECT_NOTICE_MS = 2_000;
const FIRST_CONNECT_REPEAT_MS = 30_000;

/** What a plain TCP dial of a NATS URL gets: the cause to log while the first connect waits. */
function dialCause(server: string): Promise<string> {
  let host: string;
  let port: number;
  try {
    const u = new URL(server.includes('://') ? server : `nats://${server}`);
    host = u.hostname.replace(/^\[|\]$/g, '');
    port = Number(u.port || 4222);
  } catch {
    return Promise.resolve(`not a URL: ${redactServers(server)}`);
  }
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port });
    const done = (cause: string): void => {
      s.destroy();
      resolve(cause);
    };
    s.setTimeout(2_000, () => done(`connect to ${host}:${port} timed out`));
    s.once('connect', () => done(`${host}:${port} accepts TCP but no NATS session starts (TLS, credentials, or not a NATS port?)`));
    s.once('error', (err) => done(err.message));
  });
}

/**
 * The error of a first JetStream request that failed: for a server without JetStream (nobody
 * answers $JS.API.INFO: nats.js's bare "503") or an account without it, a message that names the
 * cause and the fix, without the nats.js error as its cause (its stack tells nothing more), so a
 * service's "failed to start" line says what to do; anything else keeps the nats.js error.
 */
function jetStreamUnavailable(server: string, err: unknown): BusError {
  const api = jsApiErrCode(err);
  if (api === JS_NOT_ENABLED_FOR_ACCOUNT) {
    return new BusError('bus_connect_failed', `NATS at ${redactServers(server)} has no JetStream for this connection's account (enable jetstream for the account in the nats-server config)`);
  }
  if (api === JS_NOT_ENABLED || (api === undefined && natsCode(err) === ErrorCode.NoResponders)) {
    return new BusError('bus_connect_failed', `NATS at ${redactServers(server)} has no JetStream (start nats-server with -js)`);
  }
  return new BusError('bus_connect_failed', `JetStream unavailable on ${redactServers(server)}: ${redactServers((err as Error).message)}`, { cause: err });
}

/** A replica the stream's leader heard from within this long (nanoseconds, as stream info's `active`) counts for its quorum. */
const REPLICA_HEARD_WITHIN_NS = 5e9;

/**
 * A stream info answer for a stream that can store a publish (P263): no error, and in a cluster a
 * leader that heard from a majority of the group (itself included) within the last 5 s. nats-server
 * 2.9 answers stream info from a node whose peers are gone: for about 20 s its old leader still
 * names itself (its followers' `active` grows, and they turn `current: false` after about 10 s),
 * then with no leader at all; neither can commit a publish. `current` alone is not the test: a
 * follower a busy stream keeps a few entries behind is not current and still acknowledges writes.
 */
export function hasQuorum(body: unknown): boolean {
  if (typeof body !== 'object' || body === null || 'error' in body || !('config' in body)) return false;
  const cluster = (body as { cluster?: { leader?: unknown; replicas?: { current?: unknown; active?: unknown; offline?: unknown }[] } }).cluster;
  if (cluster === undefined) return true;
  if (typeof cluster.leader !== 'string' || cluster.leader === '') return false;
  const replicas = Array.isArray(cluster.replicas) ? cluster.replicas : [];
  // `active` 0 is also what nats-server reports for a peer its raft node never heard from since it
  // started: only with `current` does it count.
  const heard = (r: { current?: unknown; active?: unknown; offline?: unknown }): boolean =>
    r.offline !== true && (typeof r.active === 'number' ? r.active < REPLICA_HEARD_WITHIN_NS && (r.active > 0 || r.current === true) : r.current === true);
  return (1 + replicas.filter(heard).length) * 2 > replicas.length + 1;
}

/**
 * Connects to NATS with reconnect-forever (jittered wait). Fails fast on the first
 * connect unless `waitOnFirstConnect` is set (the services set it: NATS down at start is
 * waited out, as Redis down is, instead of a crash loop).
 */
export async function connectBus(o: BusOptions): Promise<Bus> {
  if (o.servers.length === 0) throw new BusError('bus_connect_failed', 'connectBus: no NATS servers configured');
  const login = natsConnectOptions(o);
  const servers = redactServers(o.servers.join(','));
  let nc: NatsConnection;
  // A service waiting for NATS at start says so after 2 s, then every 30 s, with what a plain TCP
  // dial of the first server gets (nats.js retries every error alike, a mistyped host included).
  let waiting: NodeJS.Timeout | undefined;
  const notice = (): void => {
    void dialCause(o.servers[0] ?? '').then((cause) => {
      if (waiting === undefined) return;
      o.logger.warn('bus: NATS not reachable at start, waiting for it', { servers, name: o.name, cause });
      waiting = setTimeout(notice, FIRST_CONNECT_REPEAT_MS);
    });
  };
  if (o.waitOnFirstConnect) waiting = setTimeout(notice, FIRST_CONNECT_NOTICE_MS);
  try {
    nc = await connect({
      ...login,
      name: o.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      reconnectJitter: 500,
      pingInterval: NATS_PING_INTERVAL_MS,
      maxPingOut: 2,
      timeout: o.connectTimeoutMs ?? NATS_CONNECT_TIMEOUT_MS,
      waitOnFirstConnect: o.waitOnFirstConnect ?? false,
      // Without this every request (each JetStream publish is one) builds two Error objects
      // with stack traces up front, only to name the caller if it times out: measurable CPU
      // per job (issue 7, CPU profiles). Our errors carry the subject instead.
      noAsyncTraces: true,
    });
  } catch (err) {
    // nats.js's own text ("'Authorization Violation'") does not say what was tried; say it, never the secret.
    const refused = natsCode(err) === ErrorCode.AuthorizationViolation || natsCode(err) === ErrorCode.AuthenticationExpired;
    const hint = refused ? ` (NATS refused the login: ${loginOf(o)})` : '';
    throw new BusError('bus_connect_failed', `connect to ${servers}: ${redactServers((err as Error).message)}${hint}`, { cause: err });
  } finally {
    clearTimeout(waiting);
    waiting = undefined;
  }
  const resets = sendBufferResets(nc);
  if (!flushOncePerTurn(nc)) o.logger.warn('bus: this nats.js is not the version flushOncePerTurn was written for; each publish keeps its own socket write', { name: o.name });
  if (!keepRetryingRefusedLogins(nc)) o.logger.warn('bus: this nats.js is not the version keepRetryingRefusedLogins was written for; a login refused twice at reconnects ends the connection', { name: o.name });
  let jsm: JetStreamManager;
  try {
    jsm = await nc.jetstreamManager(); // fails when the server has JetStream disabled
  } catch (err) {
    const server = nc.getServer();
    await nc.close();
    throw jetStreamUnavailable(server, err);
  }
  const js = nc.jetstream();
  o.logger.info('bus: connected to NATS', { server: redactServers(nc.getServer()), name: o.name });
  return new NatsBus(nc, js, jsm, o, o.logger, busMetrics(o.registry), resets);
}
