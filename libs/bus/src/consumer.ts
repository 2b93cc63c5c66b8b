import { AckPolicy, DeliverPolicy, ReplayPolicy, nanos, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type Consumer as NatsConsumer } from 'nats';
import { BusError, jsApiErrCode } from './errors';
import { monoNow } from './mono';
import type { BusMetrics } from './metrics';
import { STREAM_SYS, durableName } from './subjects';
import type { BusLogger, ConsumeOptions, Consumer, HandlerOutcome } from './types';

const ACK_WAIT_MS = 30_000;
/** D8: deliveries of one message before JetStream drops it. */
export const MAX_DELIVER = 20;
const MAX_ACK_PENDING = 1024;
/** D8 backoff, applied by us on handler errors (see README: a consumer-level `backoff` would replace AckWait). */
export const ERROR_BACKOFF_MS = [100, 500, 1_000, 2_000, 5_000] as const;
const UNDECODABLE_MAX_DELIVERIES = 3;
const UNDECODABLE_NAK_MS = 100;
/**
 * How long a message whose handler failed because a shared dependency is down (ConsumeOptions
 * .unavailable) is kept and retried in process before it is NAKed (one D8 delivery spent).
 */
export const HOLD_MAX_MS = 60_000;
/**
 * Server-side life of one pull request (idle heartbeats every half of it); nats.js re-pulls when
 * it ends. A stopping consumer waits for its open pulls to end (endPull, P231), so this bounds a
 * stop's wait: 2 s (it was 5 s).
 */
const PULL_EXPIRES_MS = 2_000;
/** Past a pull's life: a request sent just before the stop may reach the server this late. */
const PULL_END_MARGIN_MS = 500;

export function errorBackoffMs(deliveryCount: number): number {
  const i = Math.min(Math.max(deliveryCount, 1), ERROR_BACKOFF_MS.length) - 1;
  return ERROR_BACKOFF_MS[i] ?? 5_000;
}

export interface PullConsumerDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  logger: BusLogger;
  metrics: BusMetrics;
  /** Creates the stream again (Bus.ensureStreams) when the server answers that it does not exist. */
  recreateStream?: () => Promise<void>;
}

/** JetStream API err_code "stream not found" (nats-server errors.json, JSStreamNotFoundErr). */
const ERR_STREAM_NOT_FOUND = 10059;

/**
 * A durable pull consumer shared by every replica of a queue group, read through
 * one long-lived nats.js `consume()` subscription (P14): its inbox stays open for
 * the consumer's life, so whatever the server delivers to any of our pulls
 * arrives, however late this process gets to read it. (A fetch loop closes its
 * inbox on a client-side timer; a delivery that was on the way then waits
 * AckWait, 30 s.) Backpressure: nats.js sends its refill pulls only as the loop
 * takes messages, and the loop takes the next one only when a handler slot is
 * free, so at most `concurrency` handlers run and about `concurrency` more
 * messages are pulled ahead (README, P14). Any error ends the subscription; the loop re-binds
 * the durable (re-creating it if the server lost it) and subscribes again.
 */
export class PullConsumer<T> implements Consumer {
  readonly durable: string;
  private readonly stream: string;
  private readonly concurrency: number;
  private readonly ackWaitMs: number;
  private readonly workingEveryMs: number;
  private readonly holdMaxMs: number;
  private readonly log: BusLogger;
  private natsConsumer: NatsConsumer | undefined;
  private current: ConsumerMessages | undefined;
  private inflight = 0;
  /** Messages held in process while a dependency is down (see invoke); no new pulls meanwhile. */
  private held = 0;
  /** Messages retried in place (`retryInPlace`, P259); past inPlaceCap() the next one is held instead. */
  private inPlace = 0;
  /** Messages whose handler is running, with when each is next due a working() (see tickWorking). */
  private readonly working = new Map<JsMsg, number>();
  private workingTicker: NodeJS.Timeout | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly sleepers = new Set<() => void>();
  private stopping = false;
  /** The current iteration was ended by hold() (endPull). */
  private endedForHold = false;
  /** When stopping: until when handlers may run on (stop()'s timeout). Infinity before. */
  private stopDeadline = Number.POSITIVE_INFINITY;
  private loop: Promise<void> | undefined;
  private stopPromise: Promise<void> | undefined;

  constructor(
    private readonly deps: PullConsumerDeps,
    private readonly o: ConsumeOptions<T>,
  ) {
    this.stream = o.stream ?? STREAM_SYS;
    this.durable = durableName(o.queue, o.subject);
    this.concurrency = Math.max(1, o.concurrency ?? 64);
    this.ackWaitMs = o.ackWaitMs ?? ACK_WAIT_MS;
    this.workingEveryMs = Math.min(10_000, Math.floor(this.ackWaitMs / 3));
    this.holdMaxMs = o.holdMaxMs ?? HOLD_MAX_MS;
    this.log = deps.logger;
  }

  /** Create-or-bind the durable; identical concurrent adds are idempotent on the server. */
  async ensure(): Promise<void> {
    const { jsm, js } = this.deps;
    const cfg = {
      durable_name: this.durable,
      filter_subject: this.o.subject,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.ackWaitMs),
      max_deliver: MAX_DELIVER,
      max_ack_pending: MAX_ACK_PENDING,
      deliver_policy: DeliverPolicy.All,
      replay_policy: ReplayPolicy.Instant,
    };
    try {
      try {
        await jsm.consumers.add(this.stream, cfg);
      } catch (err) {
        // The server lost the stream with its store (restarted on an empty volume, an R1 stream's
        // node replaced): without the stream no durable can exist and every publish fails, until
        // something creates it again. ensureStreams ran only at start, so nothing did (P45).
        if (jsApiErrCode(err) !== ERR_STREAM_NOT_FOUND || !this.deps.recreateStream) throw err;
        this.log.warn('bus: stream not found (the server lost its store?), creating it again', { stream: this.stream, durable: this.durable });
        await this.deps.recreateStream();
        await jsm.consumers.add(this.stream, cfg);
      }
    } catch (err) {
      // A concurrent creator with a slightly different config, or an update the server refuses:
      // binding to the existing durable is still correct (all replicas share it).
      try {
        await jsm.consumers.info(this.stream, this.durable);
        this.log.warn('bus: consumer add failed, binding to the existing durable', { durable: this.durable, err: (err as Error).message });
      } catch {
        throw new BusError('bus_consumer_failed', `create consumer ${this.durable}: ${(err as Error).message}`, { cause: err });
      }
    }
    this.natsConsumer = await js.consumers.get(this.stream, this.durable);
  }

  start(): void {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        // After a failure the durable may be gone (server lost its store): re-create it before pulling.
        if (!this.natsConsumer || failures > 0) {
          await this.ensure();
          if (failures > 0) this.log.info('bus: consumer resumed', { durable: this.durable });
        }
        const natsConsumer = this.natsConsumer;
        if (!natsConsumer) throw new BusError('bus_consumer_failed', `consumer ${this.durable} not bound`);
        // abort_on_missing_resource: a deleted consumer or stream ends the iteration with an error
        // (handled below) instead of nats.js retrying a durable that no longer exists.
        const messages = await natsConsumer.consume({ max_messages: this.concurrency, expires: PULL_EXPIRES_MS, abort_on_missing_resource: true });
        this.current = messages;
        if (this.stopping || this.held > 0) this.endPullForHold(messages);
        for await (const m of messages) {
          failures = 0;
          if (this.held > 0 && !this.stopping) {
            // P101: holding, so nothing new is taken. It goes to another replica once our open
            // pulls have ended (endPull), not straight back to one of them.
            m.nak(PULL_EXPIRES_MS + PULL_END_MARGIN_MS);
            continue;
          }
          // P231: one that comes while stopping (its open pulls ending, endPull) is handled here
          // like any other, when a slot frees before the stop's deadline; a NAK could send it
          // straight back to a pull of ours that is still open.
          while (this.inflight >= this.concurrency && monoNow() < this.stopDeadline) await this.pause(Math.min(60_000, this.stopDeadline - monoNow()));
          if (this.inflight >= this.concurrency) {
            m.nak(); // stopping, and handlers stuck past the deadline: another replica's
            continue;
          }
          void this.handle(m);
        }
        if (this.endedForHold && !this.stopping) {
          // Ended by hold(): pull again once no message is held (the dependency answers again,
          // or the held ones were NAKed after HOLD_MAX_MS), which may already be the case: the
          // iteration ends only once its open pulls have (endPull).
          this.endedForHold = false;
          while (this.held > 0 && !this.stopping) await this.pause(60_000);
          continue;
        }
        // A healthy subscription only ends on stop(); anything else (the connection closed under
        // it) is a failure: back off, re-bind, subscribe again.
        if (!this.stopping) throw new BusError('bus_consumer_failed', `pull subscription of ${this.durable} ended`);
      } catch (err) {
        if (this.stopping) break;
        failures += 1;
        const waitMs = Math.min(5_000, 100 * 2 ** Math.min(failures, 6)) + Math.floor(Math.random() * 100);
        this.log.warn('bus: pull failed, retrying', { durable: this.durable, err: (err as Error).message, failures, waitMs });
        await this.pause(waitMs);
      } finally {
        this.current = undefined;
        this.endedForHold = false;
      }
    }
  }

  /** Waits for a freed slot, stop(), or the timeout, whichever comes first. */
  private pause(ms: number): Promise<void> {
    return wakeableDelay(ms, this.waiters);
  }

  private wakeAll(): void {
    if (this.waiters.size > 0) for (const w of [...this.waiters]) w();
  }

  /**
   * One ticker per consumer, not a timer per message (issue 7: a timer per message was a
   * Timeout object and two timer-list operations for every job, and almost none of them
   * ever fired). It ticks every half of workingEveryMs for the consumer's life (unref'd, so
   * it never keeps a process up), and a handler still running is told working() between
   * 1× and 1.5× workingEveryMs after its start or its previous working(): at most
   * AckWait / 2.
   */
  private trackWorking(m: JsMsg): void {
    this.working.set(m, monoNow() + this.workingEveryMs);
    if (!this.workingTicker) {
      this.workingTicker = setInterval(() => this.tickWorking(), Math.max(1, Math.floor(this.workingEveryMs / 2)));
      this.workingTicker.unref();
    }
  }

  private tickWorking(): void {
    const now = monoNow();
    for (const [m, due] of this.working) {
      if (due > now) continue;
      this.working.set(m, now + this.workingEveryMs);
      try {
        m.working();
      } catch (err) {
        // A closed connection: the message redelivers after AckWait, which the handler's
        // effect (in Redis before any ack) already tolerates.
        this.log.warn('bus: working() failed', { durable: this.durable, seq: m.seq, err: (err as Error).message });
      }
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    this.inflight += 1;
    const { subject } = this.o;
    const deliveryCount = m.info.redeliveryCount;
    if (deliveryCount > 1) this.deps.metrics.redeliveries.inc({ subject });
    try {
      let decoded: T;
      try {
        decoded = this.o.decode(m.data);
      } catch (err) {
        if (deliveryCount >= UNDECODABLE_MAX_DELIVERIES) {
          m.term(); // nats-server 2.9 only recognises a bare +TERM (a reason suffix makes it ignore the term)
          this.deps.metrics.undecodable.inc({ subject });
          this.log.error('bus: undecodable packet terminated', { subject, seq: m.seq, deliveryCount, err: (err as Error).message });
        } else {
          m.nak(UNDECODABLE_NAK_MS);
          this.log.warn('bus: undecodable packet', { subject, seq: m.seq, deliveryCount, err: (err as Error).message });
        }
        return;
      }
      this.trackWorking(m);
      let outcome: HandlerOutcome;
      try {
        outcome = await this.invoke(m, decoded, deliveryCount);
      } catch (err) {
        this.deps.metrics.handlerErrors.inc({ subject });
        const delayMs = errorBackoffMs(deliveryCount);
        this.log.error('bus: handler failed, nak', { subject, seq: m.seq, deliveryCount, delayMs, err: (err as Error).message });
        m.nak(delayMs);
        return;
      }
      switch (outcome.kind) {
        case 'ack':
          // Fire and forget (no +ACK request/reply per message, issue 7): acks sent in the same
          // turn leave in one socket write. A lost ack only means a redelivery, which every
          // handler already treats as a duplicate (its effect is in Redis before the ack).
          m.ack();
          break;
        case 'nak':
          m.nak(Math.max(0, outcome.delayMs));
          break;
        case 'term':
          this.log.warn('bus: message terminated by handler', { subject, seq: m.seq, reason: outcome.reason });
          m.term(); // bare +TERM: 2.9 ignores '+TERM <reason>'; the reason is in the log line above
          break;
      }
    } catch (err) {
      // nak/term on a closed connection throws; the server redelivers after AckWait anyway.
      this.log.warn('bus: could not settle message', { subject, seq: m.seq, err: (err as Error).message });
    } finally {
      this.working.delete(m);
      this.inflight -= 1;
      this.wakeAll();
    }
  }

  /**
   * Runs the handler. One that fails because a dependency every replica shares is down (Redis:
   * `unavailable` says which errors mean that) would spend a D8 delivery per NAK, and the 20 are
   * gone in about 95 s of an outage, after which JetStream drops the message: a result or a cancel
   * nothing else recovers. Such a message is kept instead (working() goes on) and its handler run
   * again after the D8 backoff, until it succeeds or fails otherwise, or HOLD_MAX_MS passed (then
   * the NAK, one delivery for a minute of outage), or the consumer stops (NAK: another replica).
   * While any message is held the consumer pulls nothing new, so a replica that alone lost Redis
   * keeps at most what it had in hand from the replicas that still have it.
   */
  private async invoke(m: JsMsg, decoded: T, deliveryCount: number): Promise<HandlerOutcome> {
    const ctx = { deliveryCount, seq: m.seq, working: () => m.working() };
    let heldSince: number | undefined;
    // P259: how this message waits: held (the consumer pulls nothing new, P101) or in place (the
    // others go on). It moves between them as its error does.
    const wait: { mode: 'none' | 'held' | 'in_place' } = { mode: 'none' };
    const enter = (next: 'none' | 'held' | 'in_place', err?: unknown): void => {
      if (next === wait.mode) return;
      if (wait.mode === 'held') {
        this.held -= 1;
        if (this.held === 0) this.wakeAll();
      } else if (wait.mode === 'in_place') {
        this.inPlace -= 1;
      }
      if (next === 'held') this.hold(m, err);
      else if (next === 'in_place') {
        this.inPlace += 1;
        this.log.warn('bus: message retried in place, the consumer goes on', { durable: this.durable, seq: m.seq, holdMaxMs: this.holdMaxMs, err: (err as Error).message });
      }
      wait.mode = next;
    };
    try {
      for (let tries = 1; ; tries++) {
        try {
          return await this.o.handler(decoded, ctx);
        } catch (err) {
          if (this.stopping) throw err;
          const shared = this.o.unavailable?.(err) ?? false;
          if (!shared && !(this.o.retryInPlace?.(err) ?? false)) throw err;
          const now = monoNow();
          if (heldSince === undefined) heldSince = now;
          else if (now - heldSince >= this.holdMaxMs) throw err;
          // Only a shared outage stops the consumer's pulls; a message of a moving slot waits in
          // place, unless a quarter of the handler slots already do (a key many messages write is
          // in the slot): then it is held, so the pulled ones are not left waiting past AckWait.
          enter(shared || (wait.mode !== 'in_place' && this.inPlace >= this.inPlaceCap()) ? 'held' : 'in_place', err);
          await this.sleep(errorBackoffMs(tries));
        }
      }
    } finally {
      enter('none');
    }
  }

  /** P259: messages retried in place at once, at most (a quarter of the handler slots, at least one). */
  private inPlaceCap(): number {
    return Math.max(1, Math.floor(this.concurrency / 4));
  }

  private hold(m: JsMsg, err: unknown): void {
    this.held += 1;
    this.deps.metrics.held.inc({ subject: this.o.subject });
    if (this.held === 1) {
      this.log.warn('bus: dependency unavailable, holding messages and pulling no more', { durable: this.durable, seq: m.seq, holdMaxMs: this.holdMaxMs, err: (err as Error).message });
      if (this.current) this.endPullForHold(this.current);
    }
  }

  /** endPull, noting that the iteration ends for a hold (run() then pulls again, not as after a failure). */
  private endPullForHold(messages: ConsumerMessages): void {
    if (!this.stopping) this.endedForHold = true;
    endPull(messages);
  }

  /** A plain wait that stop() cuts short (pause() also wakes on every freed handler slot). */
  private sleep(ms: number): Promise<void> {
    return wakeableDelay(ms, this.sleepers);
  }

  stop(timeoutMs = this.o.stopTimeoutMs ?? 10_000): Promise<void> {
    this.stopPromise ??= this.doStop(timeoutMs);
    return this.stopPromise;
  }

  private async doStop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.stopDeadline = monoNow() + timeoutMs;
    if (this.current) endPull(this.current);
    this.wakeAll();
    for (const s of [...this.sleepers]) s();
    await this.loop;
    const deadline = this.stopDeadline;
    while (this.inflight > 0 && monoNow() < deadline) await this.pause(Math.min(100, deadline - monoNow()));
    if (this.inflight > 0) {
      this.log.warn('bus: consumer stopped with handlers still running (their messages redeliver after AckWait)', { durable: this.durable, inflight: this.inflight });
    }
    // Stuck handlers must not keep the message alive forever nor keep the process alive.
    this.working.clear();
    if (this.workingTicker) clearInterval(this.workingTicker);
    this.workingTicker = undefined;
  }
}

/** The field of nats.js 2.29's pull iterator (PullConsumerMessagesImpl) that endPull turns off. */
interface PullIteratorInternals {
  refilling?: unknown;
}

/**
 * P231: ends a pull subscription without losing what the server sends it meanwhile. nats.js's
 * stop() unsubscribes the inbox at once while our pull requests are still open on the server, so
 * messages on their way were dropped in the client, and a message the loop NAKed as it stopped
 * could be sent again to a pull whose inbox was just closing: each came back only after AckWait
 * (30 s), so a rolling restart of the schedulers left a submit or a result arriving as one stopped
 * 30 s late. Draining the inbox (UNSUB, then a round trip) still lost some: the server can send
 * to a pull it matched just before the UNSUB. Instead no refill pull is sent any more and the
 * inbox stays open until every open pull has ended on the server (filled, or expired after
 * PULL_EXPIRES_MS); whatever arrives meanwhile is handled by the loop like any other message.
 * nats.js ends the iteration itself once it counts no open pull; stop() cuts it after a pull's
 * life and a margin, when none can be open. A consumer's stop therefore waits up to ~2.5 s when
 * idle (its one pull waits for messages until it expires), and about nothing under load. Relies
 * on the iterator's `refilling` flag (nats.js is pinned; `stop-handoff.spec` fails if it
 * changes); without it, it falls back to stop().
 */
function endPull(messages: ConsumerMessages): void {
  const impl = messages as unknown as PullIteratorInternals;
  if (typeof impl.refilling !== 'boolean') {
    messages.stop();
    return;
  }
  impl.refilling = false;
  const cut = setTimeout(() => messages.stop(), PULL_EXPIRES_MS + PULL_END_MARGIN_MS);
  cut.unref();
  void messages.closed().then(() => clearTimeout(cut));
}

/** Resolves after `ms`, or earlier when one of `wakers` (where it registers itself) is called. */
function wakeableDelay(ms: number, wakers: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      wakers.delete(done);
      resolve();
    };
    const t = setTimeout(done, ms);
    wakers.add(done);
  });
}

