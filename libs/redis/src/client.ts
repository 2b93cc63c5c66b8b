import { Cluster, Command, Redis } from 'ioredis';
import { GuardedConnector } from './connector';
import { isRedisAuthError, isRedisUnavailable, isSlotMoving } from './errors';
import {
  credentialsFollow, liveRead, nodeOptionsOf, readUrlFileCredentials, redisTarget, RedisTlsFilesError, RedisUrlFileError, RedisUrlFileMovedError, tlsConnectOptions, urlCredentials,
  type RedisTlsOptions,
} from './live-files';

export type RedisClient = Redis | Cluster;

/**
 * Plain connection options (config parsing and validation live in service-kit).
 *
 * `poolSize` / `minIdleConns` come from the Go system (REDIS_POOL_SIZE, REDIS_MIN_IDLE_CONNS).
 * ioredis has no connection pool: it multiplexes and pipelines every command over one socket
 * per node, so a pool size has no direct equivalent. What we honour:
 *  - `minIdleConns > 0` → connect eagerly at creation (the Go pool pre-dials idle conns);
 *    `0` → lazy connect on the first command.
 *  - `poolSize > 1` → the commands of one event-loop turn leave in one socket write per node:
 *    the socket is corked until the turn ends (writeOncePerTurn). ioredis never waits for a
 *    reply before it sends the next command, so many commands are in flight on one socket.
 */
export interface RedisConnOptions {
  /**
   * The standalone Redis (`redis://[user:password@]host:port[/db]`). In cluster mode only its
   * user and password are used, for every node (urlCredentials); empty is allowed there.
   */
  url: string;
  /**
   * `url` was read from this file (service-kit's REDIS_URL_FILE): its user and password are read
   * again at every connect, of a standalone client and of every cluster node, so a password
   * rotated in the file is used from the next reconnect on, with no restart (P128). Host, port
   * and db stay those of `url`.
   */
  urlFile?: string;
  /** host:port list; non-empty switches to cluster mode. */
  clusterAddresses: string[];
  /**
   * Set: TLS to Redis, to every node of a cluster (service-kit's redisConnectionConfig sets it for
   * rediss://). `{}` verifies the servers against the system CAs; the PEM files are read at every
   * connect, so rotated files are used from the next reconnect on (tlsConnectOptions).
   */
  tls?: RedisTlsOptions;
  poolSize: number;
  minIdleConns: number;
  /** Client name shown by CLIENT LIST (usually `<service>:<instance>`). */
  name?: string;
  /**
   * Upper bound on one command. Keeps callers from hanging when Redis is gone so they can
   * answer 503 (BEHAVIOURS §8). Default 1500 ms; 0 disables (blocking commands need that).
   */
  commandTimeoutMs?: number;
  /**
   * Connection trouble. ioredis emits an error on every failed reconnect (≈ 2 a second while
   * Redis is down) and prints each one with its stack to stderr when nobody listens; the client
   * always listens, and reports through these (throttled) when given.
   */
  events?: RedisConnectionEvents;
}

export interface RedisConnectionEvents {
  /**
   * The first error of an outage, then one whenever the message changes or `REPORT_EVERY_MS`
   * passed; `suppressed` = errors since the last report that were not reported.
   */
  error(err: Error, suppressed: number): void;
  /** Ready again after a reported error; `downMs` since the first error of the outage. */
  restored(downMs: number): void;
}

/** A repeated connection error is reported at most this often. */
export const REPORT_EVERY_MS = 30_000;

/** Reports a run of failures without repeating itself (see throttleFailures). */
export interface FailureThrottle {
  /** A failure: reported now, or counted into the next report's `suppressed`. */
  failed(err: Error): void;
  /** A success: the next failure is reported at once, as the first of a new run. */
  reset(): void;
}

/**
 * The kind a failure throttle groups Redis errors by: Redis down, a moving hash slot (P259), or
 * otherwise the message.
 */
export function redisFailureKind(err: Error): string {
  if (isRedisUnavailable(err)) return 'redis_unavailable';
  return isSlotMoving(err) ? 'redis_slot_moving' : err.message;
}

/**
 * The throttle of `redis connection error`, for any repeated failure: `report` gets the first
 * failure, then one whenever its kind changes or `everyMs` passed since the last report, with
 * `suppressed` = failures since that report that were not reported. The kind is the message
 * unless `kindOf` says otherwise (e.g. one kind for every error of a Redis outage, whose text
 * alternates between a timeout and a command dropped unsent).
 */
export function throttleFailures(
  report: (err: Error, suppressed: number) => void,
  opts: { everyMs?: number; now?: () => number; kindOf?: (err: Error) => string } = {},
): FailureThrottle {
  const { everyMs = REPORT_EVERY_MS, now = Date.now, kindOf = (err: Error) => err.message } = opts;
  let last: { kind: string; at: number } | undefined;
  let suppressed = 0;
  return {
    failed(err) {
      const t = now();
      const kind = kindOf(err);
      if (last && last.kind === kind && t - last.at < everyMs) {
        suppressed++;
        return;
      }
      last = { kind, at: t };
      const n = suppressed;
      suppressed = 0;
      report(err, n);
    },
    reset() {
      last = undefined;
      suppressed = 0;
    },
  };
}

/** What the connection events and the clock sync log through: a service's logger fits. */
export type EventLog = { warn(msg: string, fields?: Record<string, unknown>): void; info(msg: string, fields?: Record<string, unknown>): void };

/**
 * Events that log as one JSON line each: `redis connection error` (warn), `redis connection
 * restored` (info); `redis refused the credentials in REDIS_URL` (warn) instead of the first when
 * Redis answers but refuses the user or password (isRedisAuthError); `redis TLS files unusable at a
 * connect; the last good ones are used` (warn) when a REDIS_TLS_* file re-read at a connect cannot
 * be used (RedisTlsFilesError); `redis REDIS_URL_FILE unusable at a connect; the last good user and
 * password are used` (warn) likewise for REDIS_URL_FILE (RedisUrlFileError); `redis REDIS_URL_FILE
 * points elsewhere than at start; only its user and password are used until a restart` (warn) when
 * its host, port, database or scheme changed (RedisUrlFileMovedError). The client keeps retrying
 * either way, so a password rotated on the server before the pods catch up heals by itself.
 */
export function redisLogEvents(log: EventLog): RedisConnectionEvents {
  return {
    error: (err, suppressed) => {
      const fields = { err: err.message, ...(suppressed > 0 ? { suppressed } : {}) };
      log.warn(
        err instanceof RedisTlsFilesError ? 'redis TLS files unusable at a connect; the last good ones are used'
          : err instanceof RedisUrlFileMovedError ? 'redis REDIS_URL_FILE points elsewhere than at start; only its user and password are used until a restart'
          : err instanceof RedisUrlFileError ? 'redis REDIS_URL_FILE unusable at a connect; the last good user and password are used'
          : isRedisAuthError(err) ? 'redis refused the credentials in REDIS_URL' : 'redis connection error',
        fields,
      );
    },
    restored: (downMs) => log.info('redis connection restored', { down_ms: downMs }),
  };
}

/** Listens for the client's errors (so ioredis never prints them) and reports them, throttled. */
function watchConnection(client: RedisClient, events: RedisConnectionEvents | undefined): void {
  const errors = throttleFailures((err, suppressed) => events?.error(err, suppressed));
  let downSince: number | undefined;
  const onError = (err: Error): void => {
    downSince ??= Date.now();
    errors.failed(err);
  };
  client.on('error', onError);
  // A Cluster re-emits its node clients' errors as 'node error'.
  if (client instanceof Cluster) client.on('node error', onError);
  client.on('ready', () => {
    if (downSince !== undefined) events?.restored(Date.now() - downSince);
    downSince = undefined;
    errors.reset();
  });
}

/** Reconnect backoff: 50 ms doubling, capped at 1 s, with jitter so replicas do not stampede. */
export function retryDelayMs(attempt: number): number {
  const base = Math.min(1000, 50 * 2 ** Math.min(attempt, 10));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

const DEFAULT_COMMAND_TIMEOUT_MS = 1500;
/** The least wait for a reply on a busy connection before it counts as dead (P151): above any command's timeout. */
const SOCKET_TIMEOUT_MIN_MS = 5_000;

/** The part of ioredis's (5.x/6.x) Command that the command timeout uses; not public API, so checked at run time. */
interface TimedCommand {
  _commandTimeoutTimer?: NodeJS.Timeout;
  isSettled: boolean;
  reject(err: Error): void;
}

/**
 * A command's timeout gives the reply one more I/O turn before it rejects. After the event loop
 * stalled (a long GC pause, SIGSTOP, a starved VM), expired timers run before the socket is read,
 * so a command whose reply had arrived during the stall was rejected "Command timed out" though
 * Redis had run it: a worker's claim then failed and its job went to another attempt (seen in the
 * worker-freeze chaos run). The rejection now waits for a setImmediate, which runs after that
 * turn's poll phase has read the socket; a reply found there settles the command first. A command
 * whose reply does not come still fails, one turn later. Applied once, to ioredis's prototype;
 * false (nothing changed) when Command is not the shape this was written against.
 */
function timeoutsAfterPendingReplies(): boolean {
  const proto = Command.prototype as unknown as { setTimeout?: unknown };
  if (typeof proto.setTimeout !== 'function' || !String(proto.setTimeout).includes('_commandTimeoutTimer')) return false;
  proto.setTimeout = function (this: TimedCommand, ms: number): void {
    if (this._commandTimeoutTimer) return;
    this._commandTimeoutTimer = setTimeout(() => {
      setImmediate(() => {
        if (this.isSettled) return;
        timedOut.add(this);
        this.reject(new Error('Command timed out'));
      });
    }, ms);
  };
  return true;
}

/**
 * The commands their timeout rejected. That is final (ioredis retries no command after "Command
 * timed out"), so none of them is ever sent again (neverSendAnswered). Kept apart from
 * `isSettled` because a cluster pipeline whose commands all failed with one error re-creates their
 * promises (unsettled again) before it gives up, while they may still wait in an offline queue.
 */
const timedOut = new WeakSet<object>();

/** Whether timeoutsAfterPendingReplies took (for a test; false with another ioredis). */
export const COMMAND_TIMEOUT_WAITS_FOR_PENDING_REPLY = timeoutsAfterPendingReplies();

/** The part of ioredis's (5.x/6.x) client that its socket timeout uses; not public API, so checked at run time. */
interface SocketTimedClient {
  stream: NodeJS.EventEmitter & { destroy(err?: Error): void };
  socketTimeoutTimer?: NodeJS.Timeout;
  commandQueue: { length: number };
  options: { socketTimeout?: number };
  setSocketTimeout(): void;
}

/**
 * The socket timeout (P151) gives the reply one more I/O turn too, as the command timeout does
 * (timeoutsAfterPendingReplies). After a stall longer than the socket timeout (5 s by default:
 * a GC pause, SIGSTOP, a starved VM) its timer ran in the same timers phase as the command's, before
 * the socket was read, and destroyed the connection: the reply that had arrived was never read and
 * the caller was told the command timed out or may not have run, though Redis had run it. The
 * timer now waits for a setImmediate and destroys the connection only if it is still the armed one,
 * i.e. no byte came in that turn (ioredis clears or re-arms it on data) and the connection did not
 * close meanwhile. A connection that stays silent (a frozen or vanished Redis) is still cut, one
 * turn later. Applied once, to ioredis's prototype; false (nothing changed) when Redis is not the
 * shape this was written against.
 */
function socketTimeoutsAfterPendingReplies(): boolean {
  const proto = Redis.prototype as unknown as { setSocketTimeout?: unknown };
  if (typeof proto.setSocketTimeout !== 'function') return false;
  const source = String(proto.setSocketTimeout);
  if (!source.includes('socketTimeoutTimer') || !source.includes('destroy') || !source.includes('commandQueue')) return false;
  proto.setSocketTimeout = function (this: SocketTimedClient): void {
    const stream = this.stream;
    const ms = this.options.socketTimeout;
    const timer: NodeJS.Timeout = setTimeout(() => {
      setImmediate(() => {
        // Cleared (data came, the connection closed) or re-armed (data came, commands still out).
        if (this.socketTimeoutTimer !== timer) return;
        this.socketTimeoutTimer = undefined;
        stream.destroy(new Error(`Socket timeout. Expecting data, but didn't receive any in ${ms}ms.`));
      });
    }, ms);
    this.socketTimeoutTimer = timer;
    // As ioredis's: after its DataHandler's listener, so commandQueue has lost the answered commands.
    stream.once('data', () => {
      clearTimeout(this.socketTimeoutTimer);
      this.socketTimeoutTimer = undefined;
      if (this.commandQueue.length === 0) return;
      this.setSocketTimeout();
    });
  };
  return true;
}

/** Whether socketTimeoutsAfterPendingReplies took (for a test; false with another ioredis). */
export const SOCKET_TIMEOUT_WAITS_FOR_PENDING_REPLY = socketTimeoutsAfterPendingReplies();

/** What a command gets when its connection closed after it was written, before its reply (P150). */
export const REDIS_IN_FLIGHT_TEXT = 'redis connection lost with the command in flight: it may or may not have run';

/** The part of ioredis's (5.x/6.x) client that failInFlightOnClose uses; not public API, so checked at run time. */
interface ClientInternals {
  commandQueue?: { length: number; shift(): { command?: TimedCommand } | undefined };
  stream?: NodeJS.EventEmitter;
}

const inFlightGuarded = new WeakSet<Redis>();

/**
 * P150: a command written to a connection that closes before its reply fails at once, with
 * REDIS_IN_FLIGHT_TEXT (an unavailable error: the outcome is unknown), and is never sent again.
 * ioredis kept such commands and re-sent them after the reconnect (standalone:
 * autoResendUnfulfilledCommands; a cluster node: "Connection is closed." re-sent after
 * retryDelayOnFailover), so a command Redis had run, a worker's claim or a lock's acquire, ran a
 * second time and its caller got the second run's answer ("duplicate", "taken"): the job was
 * dropped. A listener put ahead of ioredis's own on each new socket's close empties the queue of
 * written commands first; commands never written (the offline queue) keep ioredis's handling.
 * false (nothing changed) when the client is not the shape this was written against.
 */
function failInFlightOnClose(redis: Redis): boolean {
  if (inFlightGuarded.has(redis)) return true;
  const internals = redis as unknown as ClientInternals;
  if (typeof internals.commandQueue?.shift !== 'function') return false;
  inFlightGuarded.add(redis);
  redis.on('connect', () => {
    internals.stream?.prependOnceListener('close', () => {
      const queue = internals.commandQueue;
      if (!queue) return;
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
        if (item.command && !item.command.isSettled) item.command.reject(new Error(REDIS_IN_FLIGHT_TEXT));
      }
    });
  });
  return true;
}

/** An entry of ioredis's (5.x/6.x) offline queue, a client's or a Cluster's; `stream` is set for a pipeline's or MULTI's commands. */
interface QueuedCommand {
  command: TimedCommand;
  stream?: unknown;
}

/** ioredis's offline queue (a denque): the part dropAnswered uses. */
interface CommandDeque {
  length: number;
  toArray(): QueuedCommand[];
  clear(): void;
  push(item: QueuedCommand): number;
}

/** The part of ioredis's (5.x/6.x) Redis and Cluster that neverSendAnswered uses; not public API, so checked at run time. */
interface OfflineInternals {
  offlineQueue?: unknown;
  resetOfflineQueue?: () => void;
  sendCommand(command: TimedCommand & { promise: Promise<unknown> }, ...rest: unknown[]): unknown;
}

function isCommandDeque(q: unknown): q is CommandDeque {
  const d = q as Partial<CommandDeque> | undefined;
  return typeof d?.length === 'number' && typeof d.toArray === 'function' && typeof d.clear === 'function' && typeof d.push === 'function';
}

/** ioredis's Command has `isSettled` (true once its promise is resolved or rejected). */
const COMMANDS_TELL_SETTLED = typeof (new Command('ping') as unknown as { isSettled?: unknown }).isSettled === 'boolean';

/** The command's caller has its answer: its promise is settled, or its timeout rejected it (timedOut). */
function isAnswered(command: TimedCommand): boolean {
  return command.isSettled || timedOut.has(command);
}

/** The offline queue is swept once it holds this many, then at twice what a sweep left. */
const OFFLINE_SWEEP_MIN = 64;

/**
 * Removes from `queue`, in place, the commands whose callers already have their answer
 * (isAnswered: their timeout rejected them). A pipeline's or a MULTI's commands share a `stream`
 * that counts their writes and sends them in one: they go together, only when every one of them is
 * answered, so a MULTI is never sent in part and the stream never waits for a write that will not
 * come (the commands written would then have no bytes on the wire and take other commands' replies).
 */
function dropAnswered(queue: CommandDeque): void {
  const items = queue.toArray();
  const livePipelines = new Set<unknown>();
  for (const it of items) if (it.stream !== undefined && !isAnswered(it.command)) livePipelines.add(it.stream);
  const keep = items.filter((it) => !isAnswered(it.command) || (it.stream !== undefined && livePipelines.has(it.stream)));
  if (keep.length === items.length) return;
  queue.clear();
  for (const it of keep) queue.push(it);
}

const answeredDropped = new WeakSet<object>();

/**
 * A command that timed out while it waited in an offline queue is never sent. ioredis keeps such
 * a command queued after its caller was rejected "Command timed out", and sends every queued
 * command once connected: with every cluster node gone (the Cluster's retry strategy never gives
 * up, and P46 times commands out from the call) the Cluster's queue grew for the whole outage and
 * its lock acquires and INCRs all ran when the cluster came back, though their callers had been
 * told they failed. A standalone client or a node can do the same with what it queued between two
 * reconnects. Now a command whose caller has its answer, handed to the client's sendCommand (a
 * queue's flush, a Cluster's delayed retry of a CLUSTERDOWN, TRYAGAIN or failover), returns at
 * once; the queue is swept of such commands before it is flushed, and while it fills (once it holds
 * OFFLINE_SWEEP_MIN, then twice what the last sweep left), so it holds at most about twice the
 * commands of one command timeout. A pipeline or MULTI goes whole (dropAnswered). false (nothing
 * changed) when the client is not the shape this was written against.
 */
function neverSendAnswered(client: RedisClient): boolean {
  if (answeredDropped.has(client)) return true;
  const internals = client as unknown as OfflineInternals;
  const reset = internals.resetOfflineQueue;
  if (!COMMANDS_TELL_SETTLED || !isCommandDeque(internals.offlineQueue) || typeof reset !== 'function') return false;
  answeredDropped.add(client);
  let sweepAt = OFFLINE_SWEEP_MIN;
  // ioredis's flushes (a client's ready handler, Cluster.executeOfflineCommands) take the queue,
  // call resetOfflineQueue, then send what the queue they took holds: sweep it in place first.
  internals.resetOfflineQueue = function (this: OfflineInternals): void {
    if (isCommandDeque(this.offlineQueue)) dropAnswered(this.offlineQueue);
    sweepAt = OFFLINE_SWEEP_MIN;
    reset.call(this);
  };
  const send = internals.sendCommand.bind(client);
  internals.sendCommand = (command, ...rest) => {
    // A pipeline's command (it has a stream) goes with its pipeline: see dropAnswered.
    if (rest[0] === undefined && isAnswered(command)) return command.promise;
    const sent = send(command, ...rest);
    const queue = internals.offlineQueue;
    if (isCommandDeque(queue) && queue.length >= sweepAt) {
      dropAnswered(queue);
      sweepAt = Math.max(OFFLINE_SWEEP_MIN, 2 * queue.length);
    }
    return sent;
  };
  return true;
}

/** Standalone client for `url`, or a Cluster client when `clusterAddresses` is non-empty. */
export function createRedis(opts: RedisConnOptions): RedisClient {
  const commandTimeout = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  // One throttle per file: a throttle keeps back only a repeat of its last message.
  const tlsTrouble = throttleFailures((err, suppressed) => opts.events?.error(err, suppressed));
  const urlTrouble = throttleFailures((err, suppressed) => opts.events?.error(err, suppressed));
  const urlFile = opts.urlFile;
  // In cluster mode REDIS_URL's host is not used: only a change of scheme would matter, and TLS is the entries' too.
  const startTarget = opts.clusterAddresses.length > 0 ? undefined : redisTarget(opts.url);
  const credentials = urlFile === undefined ? undefined : liveRead(
    () => readUrlFileCredentials(urlFile, startTarget, (err) => urlTrouble.failed(err)),
    (err) => urlTrouble.failed(new RedisUrlFileError(`REDIS_URL_FILE unusable, the last good user and password are used: ${err.message}`)),
  );
  const common = {
    connectionName: opts.name,
    // Every connection's socket keeps an error listener (a second error was an uncaught exception).
    Connector: GuardedConnector,
    connectTimeout: 2000,
    // A queued command fails after one failed reconnect instead of the default 20, so a request
    // made while Redis is down errors within ~1-2 s (callers map it to 503).
    maxRetriesPerRequest: 1,
    commandTimeout: commandTimeout > 0 ? commandTimeout : undefined,
    lazyConnect: opts.minIdleConns <= 0,
    keepAlive: 10_000,
    // P150: never re-send a command that may have run (failInFlightOnClose fails it instead).
    autoResendUnfulfilledCommands: false,
    // P151: a connection that has commands out and no byte back for this long is dead (a host gone
    // without a reset, a partition): it is closed and dialled again. keepAlive probes only an idle
    // socket, so without this every command timed out for the ~15 min the kernel retransmits.
    socketTimeout: commandTimeout > 0 ? Math.max(SOCKET_TIMEOUT_MIN_MS, 3 * commandTimeout) : undefined,
    ...(opts.tls !== undefined ? { tls: tlsConnectOptions(opts.tls, (err) => tlsTrouble.failed(err)) } : {}),
  };
  const batched = opts.poolSize > 1;
  if (opts.clusterAddresses.length > 0) {
    const nodes = opts.clusterAddresses.map(parseHostPort);
    const cluster = new Cluster(nodes, {
      // Every node client, the seeds and those learnt from CLUSTER SLOTS, logs in with these.
      redisOptions: { ...common, ...urlCredentials(opts.url) },
      clusterRetryStrategy: (times: number) => retryDelayMs(times),
      lazyConnect: common.lazyConnect,
      // Cluster-level waits (MOVED storms, CLUSTERDOWN) stay short for the same fail-fast reason.
      retryDelayOnClusterDown: 100,
      retryDelayOnFailover: 100,
      retryDelayOnTryAgain: 100,
      maxRedirections: 16,
    });
    if (commandTimeout > 0) {
      // ioredis arms commandTimeout when a node client sends the command. With every node gone the
      // Cluster holds commands in its own offline queue, never reaching a node, so they waited for
      // the whole outage (decisions.md P46). Arm it on entry instead: the same bound from the
      // caller's call, and a command that does reach a node keeps this timer (Command.setTimeout
      // arms once). One that times out in the queue is dropped from it (neverSendAnswered).
      const send = cluster.sendCommand.bind(cluster);
      cluster.sendCommand = ((command: Parameters<typeof send>[0], ...rest: unknown[]) => {
        command.setTimeout(commandTimeout);
        return (send as (...a: unknown[]) => unknown)(command, ...rest);
      }) as typeof cluster.sendCommand;
    }
    if (credentials) {
      // Node clients are made from the cluster's copy of redisOptions (a snapshot of its fields):
      // the copy reads the file for each new node, and each node for each of its reconnects (and
      // the duplicate that asks CLUSTER SLOTS). No node exists yet: the first connect is async.
      const nodeOptions = nodeOptionsOf(cluster);
      if (nodeOptions) credentialsFollow(nodeOptions, credentials);
      eachNode(cluster, (node) => credentialsFollow(node.options, credentials));
    }
    // After the P46 wrapper and writeOncePerTurn, so an answered command is turned away first.
    neverSendAnswered(cluster);
    if (batched) eachNode(cluster, writeOncePerTurn);
    eachNode(cluster, (node) => void neverSendAnswered(node));
    eachNode(cluster, (node) => void failInFlightOnClose(node));
    watchConnection(cluster, opts.events);
    return cluster;
  }
  const redis = new Redis(opts.url, {
    ...common,
    retryStrategy: (times: number) => retryDelayMs(times),
  });
  if (credentials) credentialsFollow(redis.options, credentials);
  if (batched) writeOncePerTurn(redis);
  neverSendAnswered(redis);
  failInFlightOnClose(redis);
  watchConnection(redis, opts.events);
  return redis;
}

/** `fn` for every node client of `cluster`: those made while connecting (the seeds) exist already, later ones arrive by event. */
function eachNode(cluster: Cluster, fn: (node: Redis) => void): void {
  for (const node of cluster.nodes('all')) fn(node);
  cluster.on('+node', fn);
}

const batchedClients = new WeakSet<Redis>();

/**
 * One socket write per event-loop turn on a standalone client or a cluster's node client: the
 * first command of a turn corks the socket and a setImmediate uncorks it, so every command sent
 * in between leaves in one writev, in the order it was sent. This replaces ioredis's
 * auto-pipelining (issue 7), which batches the same way but builds a Pipeline object per turn
 * (copying every defined script onto it), sends one batch at a time per connection, and kept
 * those objects alive across young-generation collections: at 100 jobs/s the scheduler's
 * scavenges promoted ≈ 1.3 MB each and paused ≈ 9 ms, against ≈ 0.2 MB and ≈ 3 ms without it
 * (docs/performance-history.md). Commands sent before the client is ready still go through
 * ioredis's offline queue; a MULTI or a pipeline writes through the same corked socket, in order.
 */
function writeOncePerTurn(redis: Redis): void {
  if (batchedClients.has(redis)) return;
  batchedClients.add(redis);
  let corked: Redis['stream'] | undefined;
  const uncork = (): void => {
    const s = corked;
    corked = undefined;
    s?.uncork();
  };
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (command, stream) => {
    if (corked === undefined && redis.status === 'ready') {
      const s = redis.stream;
      if (s.writable) {
        s.cork();
        corked = s;
        setImmediate(uncork);
      }
    }
    return send(command, stream);
  };
}

function parseHostPort(addr: string): { host: string; port: number } {
  const s = addr.trim().replace(/^rediss?:\/\//, '');
  const i = s.lastIndexOf(':');
  if (i < 0) return { host: s, port: 6379 };
  return { host: s.slice(0, i) || '127.0.0.1', port: Number(s.slice(i + 1)) };
}

const closing = new WeakMap<RedisClient, Promise<void>>();

/** QUIT (flushes pending replies), then a hard disconnect after timeoutMs. Idempotent. */
export function closeRedis(c: RedisClient, timeoutMs = 2000): Promise<void> {
  let p = closing.get(c);
  if (!p) {
    p = doClose(c, timeoutMs);
    closing.set(c, p);
  }
  return p;
}

async function doClose(c: RedisClient, timeoutMs: number): Promise<void> {
  if (c.status === 'end') return;
  const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
  try {
    // Not connected: QUIT would sit in the offline queue until the deadline, so skip it.
    if (c.status === 'ready') {
      await Promise.race([c.quit().then(() => undefined, () => undefined), deadline]);
    }
    // status changes while awaiting QUIT; re-read it rather than trust the earlier narrowing.
    if ((c.status as string) !== 'end') c.disconnect();
    await Promise.race([ended, deadline]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** The connections that hold data: each master of a cluster, or the standalone client itself. */
export function masters(c: RedisClient): Redis[] {
  return c instanceof Cluster ? c.nodes('master') : [c];
}

/** `reply`'s value, or null when it fails or does not come within timeoutMs. Never throws. */
async function replyWithin<T>(reply: Promise<T>, timeoutMs: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([reply, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)))]);
  } catch {
    return null;
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** true iff PING answers within timeoutMs. Never throws (used by readiness checks). */
export async function pingRedis(c: RedisClient, timeoutMs = 1000): Promise<boolean> {
  if (c.status === 'end') return false;
  return (await replyWithin(c.ping(), timeoutMs)) === 'PONG';
}

/**
 * `maxmemory-policy` of every master (`INFO memory`, which managed Redis services allow where they
 * refuse CONFIG), deduplicated; empty when none answers within timeoutMs. Never throws.
 */
export async function evictionPolicies(c: RedisClient, timeoutMs = 1000): Promise<string[]> {
  const one = async (n: Redis): Promise<string | null> => {
    const info = await replyWithin(n.info('memory'), timeoutMs);
    return info === null ? null : (/^maxmemory_policy:(\S+)/m.exec(info)?.[1] ?? null);
  };
  const found = await Promise.all(masters(c).map(one));
  return [...new Set(found.filter((p): p is string => p !== null))];
}

/**
 * Every key this project writes has a TTL or must not vanish early (job records, locks, fences,
 * claims), so any eviction policy other than `noeviction` can drop state that exactly-once rests
 * on when Redis fills up. Says so through `warn`, once, naming the policy; silent when Redis
 * does not answer (readiness reports that).
 */
export async function warnIfEvicting(c: RedisClient, warn: (msg: string, fields: Record<string, unknown>) => void): Promise<string[]> {
  const evicting = (await evictionPolicies(c)).filter((p) => p !== 'noeviction');
  if (evicting.length > 0) {
    warn('redis may evict keys under memory pressure: set maxmemory-policy noeviction', { maxmemory_policy: evicting.join(','), why: 'an evicted job record, lock, fence or claim breaks exactly-once' });
  }
  return evicting;
}
