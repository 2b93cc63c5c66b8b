import type { Registry } from 'prom-client';

/** The subset of @cordum/service-kit's Logger the bus needs (bus must not depend on service-kit). */
export interface BusLogger {
  debug(msg: string, f?: object): void;
  info(msg: string, f?: object): void;
  warn(msg: string, f?: object): void;
  error(msg: string, f?: object): void;
}

/** TLS to NATS; the client reads the files at each (re)connect. */
export interface NatsTlsOptions {
  /** PEM CA certificate(s) the servers' certificates must chain to (else the system CAs). */
  caFile?: string;
  /** PEM client certificate and its key, for servers that verify clients. */
  certFile?: string;
  keyFile?: string;
}

/**
 * Where NATS is and how to log in: what @cordum/service-kit natsConnectionConfig builds from
 * NATS_URL, NATS_USER, NATS_PASSWORD(_FILE), NATS_TOKEN(_FILE), NATS_CREDS_FILE and NATS_TLS_*.
 * At most one way to log in. A server URL may not carry `user:password@` (nats.js would drop it).
 */
export interface NatsConnectOptions {
  /** NATS URLs (NATS_URL comma list, already split), without userinfo. */
  servers: string[];
  user?: string;
  password?: string;
  token?: string;
  /** The text of a NATS .creds file (user JWT and nkey seed). */
  credentials?: string;
  /**
   * The files `password`, `token` and `credentials` were read from, read again at every
   * (re)connect: a secret rotated in its file (a Kubernetes Secret volume) is used without a
   * restart. The value given above stays in use while its file cannot be read or is empty.
   */
  passwordFile?: string;
  tokenFile?: string;
  credentialsFile?: string;
  /** Set: every connection must be TLS (an empty object: verified against the system CAs). */
  tls?: NatsTlsOptions;
  /** Each connect attempt's budget: DNS, TCP, TLS and the login (default 3 000 ms; NATS_CONNECT_TIMEOUT). */
  connectTimeoutMs?: number;
}

export interface BusOptions extends NatsConnectOptions {
  /** Connection name, shown in the server's connz. */
  name: string;
  logger: BusLogger;
  registry?: Registry;
  /** Keep trying the first connect instead of failing fast (default false; every service sets it). */
  waitOnFirstConnect?: boolean;
}

export type HandlerOutcome = { kind: 'ack' } | { kind: 'nak'; delayMs: number } | { kind: 'term'; reason: string };

export interface HandlerContext {
  deliveryCount: number;
  seq: number;
  working(): void;
}

export interface ConsumeOptions<T> {
  stream?: 'CORDUM_SYS';
  subject: string;
  queue: string;
  decode: (data: Uint8Array) => T;
  handler: (msg: T, ctx: HandlerContext) => Promise<HandlerOutcome>;
  /** In-flight handlers per replica (default 64). */
  concurrency?: number;
  /** AckWait (default 30 000 ms, D8); tests shorten it. Applied to the shared durable, so keep it equal across replicas. */
  ackWaitMs?: number;
  /** How long stop() waits for in-flight handlers (default 10 000 ms). */
  stopTimeoutMs?: number;
  /**
   * True for a handler error that means a dependency every replica shares is down (the services
   * pass @cordum/redis isRedisUnavailable): the message is held and retried in process for up to
   * HOLD_MAX_MS instead of NAKed, so an outage does not use up its D8 deliveries (README).
   */
  unavailable?: (err: unknown) => boolean;
  /**
   * True for a handler error that concerns only this message's data and will pass (a Redis
   * Cluster hash slot mid-migration, @cordum/redis isSlotMoving; P259): the message is retried in
   * process for up to holdMaxMs like a held one, but the consumer goes on pulling and handling
   * the others, which a shared outage's hold stops.
   */
  retryInPlace?: (err: unknown) => boolean;
  /** How long one message is held that way (default HOLD_MAX_MS, 60 s); tests shorten it. */
  holdMaxMs?: number;
}

export interface Consumer {
  /** Stop pulling and wait (bounded) for in-flight handlers; idempotent. */
  stop(): Promise<void>;
}

export interface Subscription {
  unsubscribe(): void;
}

/** Where a durable queue consumer stands (consumer info and one stream read, `Bus.backlog`). */
export interface ConsumerBacklog {
  /** Messages of the consumer's subject not delivered to any replica yet. */
  undelivered: number;
  /** Delivered and not acknowledged: in a handler, pulled ahead, or on a dead replica until AckWait. */
  unacked: number;
  /**
   * When the stream stored the newest message delivered so far (epoch ms, the NATS server's clock),
   * while anything is undelivered or unacked; null when the consumer has nothing in hand or the
   * message is gone (stream limits).
   */
  newestDeliveredAt: number | null;
}

export interface Bus {
  readonly connected: boolean;
  /** Waits up to `budgetMs` (default 60 s) for a JetStream that is not ready yet (a cluster electing, a busy one). */
  ensureStreams(budgetMs?: number): Promise<void>;
  publish(subject: string, data: Uint8Array, opts?: { msgId?: string }): Promise<void>;
  publishCore(subject: string, data: Uint8Array): void;
  /** Resolves once the server has every message published before the call; calls of one event-loop turn share one PING. */
  flush(): Promise<void>;
  consume<T>(o: ConsumeOptions<T>): Promise<Consumer>;
  subscribe(subject: string, handler: (data: Uint8Array, subject: string) => void, opts?: { queue?: string }): Subscription;
  /** The backlog of the durable `queue` consumer of `subject` on CORDUM_SYS (two JetStream API requests at most). */
  backlog(queue: string, subject: string): Promise<ConsumerBacklog>;
  /**
   * While the durable `queue` consumer of `subject` has messages delivered and not acknowledged
   * (in a handler, or fetched by a replica that stopped or froze, until AckWait): when the stream
   * stored the message at its ack floor, every message up to which is acknowledged, so each one
   * not acknowledged was stored no earlier (epoch ms, the NATS server's clock; 0 when none was
   * acknowledged yet or that message is gone). null when nothing is unacknowledged. Two JetStream
   * API requests at most.
   */
  unackedSince(queue: string, subject: string): Promise<number | null>;
  /**
   * Whether CORDUM_SYS answers a JetStream API request (its stream info) within `timeoutMs`, and in a
   * cluster names a leader with a majority of its replicas current: false while the connection is
   * down, the server is frozen, the stream is gone, or the stream has no quorum, when every publish
   * to it would fail though the socket is up. One request; for readiness checks (P263).
   */
  streamAnswers(timeoutMs: number): Promise<boolean>;
  /**
   * `listener(false)` when the connection to NATS is lost, `listener(true)` when it is back (nats.js
   * then renews every subscription; core NATS messages published in between reached nobody here).
   * Returns its removal. A listener that throws is logged and the others still run.
   */
  onConnection(listener: (connected: boolean) => void): () => void;
  close(): Promise<void>;
}
