// Fan-out of bus broadcasts to this replica's WebSocket clients, per tenant.
// sys.job.state / sys.job.progress carry no tenant (wire types unchanged), so
// the job's tenant is read once from its record and cached (a job never changes
// tenant). Lookups run in parallel but events are delivered in arrival order,
// so one client sees a job's states in the order they were published.
// Delivery is at most once; where events may have been lost (the bus connection
// lost and back, events dropped because Redis could not tell their tenant or
// the lookup backlog was full) every client gets a `gap` frame (P133).
import type { KeyObject } from 'node:crypto';
import { Counter, type Registry } from 'prom-client';
import { subjects, type Bus, type Subscription } from '@cordum/bus';
import { verifyPacket } from '@cordum/protocol';
import { jobKeys } from '@cordum/job-store';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { STREAM_SUBJECTS, decodeStreamPacket, type LostBroadcasts, type PendingEvent, type StreamEvent } from './events';
import { errorText } from '@cordum/service-kit';

const TENANT_CACHE_MAX = 100_000;
/** Events waiting for a tenant lookup; beyond this the hub drops (Redis is slow or down) rather than grow. */
const MAX_PENDING = 10_000;
/** Sockets handed one event before the loop gets a turn (see deliver). */
const FANOUT_CHUNK = 256;
const LOOKUP_TIMEOUT_MS = 1_000;
/** At most one `gap` frame per reason this often; a loss after one is always followed by another (trailing). */
export const GAP_EVERY_MS = 1_000;

/** Why a `gap` frame was sent: what the client may have missed (P133). */
export type GapReason = 'bus_reconnected' | 'events_dropped' | 'broadcast_lost';

export type StreamSink = (json: string) => void;

export interface StreamHub {
  start(): void;
  stop(): void;
  /**
   * Registers a sink for one tenant; returns its removal. The first sink
   * subscribes this replica to the broadcast subjects; `subscribed` resolves
   * once the NATS server has the subscription, so every event published after
   * it reaches the sink.
   */
  add(tenant: string, sink: StreamSink): { remove: () => void; subscribed: Promise<void> };
  /** Primes the tenant cache (jobs this replica created) while anyone listens. */
  noteTenant(jobId: string, tenant: string): void;
}

/**
 * After the last client leaves, the subscriptions stay this long, so a client
 * that reconnects at once does not make the replica unsubscribe and subscribe again.
 */
export const UNSUBSCRIBE_LINGER_MS = 10_000;

/**
 * The hello waits at most this long for NATS to confirm the subscription: while
 * the bus is down or stalled a client still gets its hello at once, and the
 * subscription (which the NATS client renews on reconnect) delivers events once
 * the bus is back.
 */
export const SUBSCRIBE_CONFIRM_MS = 2_000;

export function createStreamHub(o: {
  bus: Bus;
  redis: RedisClient;
  logger: Logger;
  registry: Registry;
  lingerMs?: number;
  /** P245: workers' progress is streamed only when its packet verifies with one of these keys. */
  verifyKeys?: readonly KeyObject[];
}): StreamHub {
  const lingerMs = o.lingerMs ?? UNSUBSCRIBE_LINGER_MS;
  let running = false;
  let linger: NodeJS.Timeout | undefined;
  let subscribed: Promise<void> = Promise.resolve();
  const sinks = new Map<string, Set<StreamSink>>();
  let clients = 0;
  const tenants = new Map<string, string>();
  const subs: Subscription[] = [];
  let pending = 0;
  let chain: Promise<void> = Promise.resolve();
  const dropped = new Counter({ name: 'cordum_ws_events_dropped_total', help: 'Bus events not delivered to WebSocket clients', labelNames: ['reason'], registers: [o.registry] });
  const received = new Counter({ name: 'cordum_ws_bus_messages_total', help: 'Broadcast messages this replica received from the bus for its WebSocket clients (only while it has clients)', registers: [o.registry] });
  const delivered = new Counter({ name: 'cordum_ws_events_total', help: 'Bus events fanned out to WebSocket clients', labelNames: ['type'], registers: [o.registry] });
  const gaps = new Counter({ name: 'cordum_ws_gaps_total', help: 'gap frames sent to every WebSocket client: events may have been lost (bus_reconnected, events_dropped, broadcast_lost)', labelNames: ['reason'], registers: [o.registry] });

  const noteTenant = (jobId: string, tenant: string): void => {
    // Nobody listens: nothing will look the job up, so keep no per-job state (issue 7).
    if (subs.length === 0) return;
    if (tenants.size >= TENANT_CACHE_MAX && !tenants.has(jobId)) {
      const oldest = tenants.keys().next();
      if (!oldest.done) tenants.delete(oldest.value);
    }
    tenants.set(jobId, tenant);
  };

  /** The job's tenant; null when the job has no record (expired, foreign), undefined when Redis could not tell (down, slow). */
  const lookupTenant = async (jobId: string): Promise<string | null | undefined> => {
    const hit = tenants.get(jobId);
    if (hit !== undefined) return hit;
    if (o.redis.status !== 'ready') return undefined;
    const timedOut = Symbol('timeout');
    let raw: string | null | typeof timedOut;
    let timer: NodeJS.Timeout | undefined;
    try {
      raw = await Promise.race([
        o.redis.hget(jobKeys.meta(jobId), 'tenant'),
        new Promise<typeof timedOut>((r) => (timer = setTimeout(() => r(timedOut), LOOKUP_TIMEOUT_MS))),
      ]);
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
    if (raw === timedOut) return undefined;
    if (raw === null) return null;
    try {
      const t = JSON.parse(raw) as unknown;
      if (typeof t !== 'string') return null;
      noteTenant(jobId, t);
      return t;
    } catch {
      return null;
    }
  };

  /** The event with its tenant; null: nobody's (no record), undefined: its tenant could not be learned. */
  const resolve = async (p: PendingEvent): Promise<StreamEvent | null | undefined> => {
    const tenant = p.tenant ?? (p.jobId !== undefined ? await lookupTenant(p.jobId) : null);
    return typeof tenant === 'string' ? ({ ...p.body, tenant } as StreamEvent) : tenant;
  };

  /** One frame to every socket of a set, FANOUT_CHUNK at a time (see below). */
  const fanOut = async (set: Set<StreamSink>, json: string): Promise<void> => {
    if (set.size <= FANOUT_CHUNK) {
      for (const sink of set) sink(json);
      return;
    }
    // Deliveries run as one promise chain, all microtasks: one event to thousands of sockets,
    // event after event, held the loop (health checks, HTTP) until every socket had them all.
    // Between chunks the loop runs; the chain keeps each client's events in order.
    let n = 0;
    for (const sink of [...set]) {
      sink(json);
      if (++n % FANOUT_CHUNK === 0) await new Promise<void>((r) => setImmediate(r));
    }
  };

  const deliver = async (ev: StreamEvent | null | undefined, type: string): Promise<void> => {
    if (ev === null) {
      dropped.inc({ reason: 'no_tenant' });
      return;
    }
    if (ev === undefined) {
      // Somebody's event, and nobody can tell whose: every client may have missed it.
      dropped.inc({ reason: 'tenant_unknown' });
      announceGap('events_dropped');
      return;
    }
    const set = sinks.get(ev.tenant);
    if (!set || set.size === 0) return;
    delivered.inc({ type });
    await fanOut(set, JSON.stringify(ev));
  };

  // P133: `gap` frames, in the delivery chain so a client gets one after the events before it.
  const gapTimers = new Map<GapReason, NodeJS.Timeout>();
  const gapLast = new Map<GapReason, number>();
  const sendGap = (reason: GapReason, since: number | undefined): void => {
    gapLast.set(reason, Date.now());
    const at = new Date().toISOString();
    chain = chain.then(async () => {
      if (sinks.size === 0) return;
      gaps.inc({ reason });
      for (const [tenant, set] of [...sinks]) {
        await fanOut(set, JSON.stringify({ type: 'gap', tenant, reason, ...(since !== undefined ? { since: new Date(since).toISOString() } : {}), at }));
      }
    }).catch((err: unknown) => o.logger.warn('stream delivery failed', { err: errorText(err) }));
  };
  /** The `since` a pending trailing gap will name. */
  const gapSince = new Map<GapReason, number | undefined>();
  /** A gap now, or (one sent less than GAP_EVERY_MS ago) one at the end of that interval. */
  const announceGap = (reason: GapReason, since?: number): void => {
    if (clients === 0) return;
    if (gapTimers.has(reason)) {
      // The trailing gap names the earliest moment any of the losses it stands for may be from.
      const cur = gapSince.get(reason);
      gapSince.set(reason, cur === undefined || since === undefined ? undefined : Math.min(cur, since));
      return;
    }
    const wait = (gapLast.get(reason) ?? -Infinity) + GAP_EVERY_MS - Date.now();
    if (wait <= 0) return sendGap(reason, since);
    gapSince.set(reason, since);
    const t = setTimeout(() => {
      gapTimers.delete(reason);
      const s = gapSince.get(reason);
      gapSince.delete(reason);
      if (running) sendGap(reason, s);
    }, wait);
    t.unref();
    gapTimers.set(reason, t);
  };
  /** When the bus connection was lost, while it is. */
  let lostAt: number | undefined;
  const onConnection = (connected: boolean): void => {
    if (!connected) {
      lostAt ??= Date.now();
      return;
    }
    const since = lostAt;
    lostAt = undefined;
    // Broadcasts are core NATS: what was published while we were away reached nobody here.
    if (subs.length > 0) announceGap('bus_reconnected', since);
  };
  let offConnection: (() => void) | undefined;

  const onMessage = (data: Uint8Array, subject: string): void => {
    received.inc();
    if (clients === 0) return; // lingering after the last client: skip decoding and lookups
    // P245: a progress is a worker's word (percent, message) shown to people: with the workers'
    // keys configured, one nobody signed (published by anything that can reach the bus) is dropped.
    if (o.verifyKeys && subject === subjects.progress && !verifyPacket(data, o.verifyKeys)) {
      dropped.inc({ reason: 'unverified' });
      return;
    }
    let p: PendingEvent | LostBroadcasts | null;
    try {
      p = decodeStreamPacket(subject, data);
    } catch {
      dropped.inc({ reason: 'undecodable' });
      return;
    }
    if (!p) return;
    // P148: another replica's state broadcasts may not have left while its NATS was away.
    if ('lostSince' in p) {
      announceGap('broadcast_lost', p.lostSince);
      return;
    }
    if (pending >= MAX_PENDING) {
      dropped.inc({ reason: 'backlog' });
      announceGap('events_dropped');
      return;
    }
    pending++;
    const type = p.body.type;
    const resolved = resolve(p);
    chain = chain.then(async () => {
      let ev: StreamEvent | null | undefined = null;
      try {
        ev = await resolved;
      } finally {
        pending--;
      }
      await deliver(ev, type);
    }).catch((err: unknown) => o.logger.warn('stream delivery failed', { err: errorText(err) }));
  };

  // Issue 7: the broadcast subjects carry several messages per job; a replica
  // with no stream client does not subscribe, so NATS does not deliver them here.
  const subscribe = (): void => {
    clearTimeout(linger);
    linger = undefined;
    if (subs.length > 0 || !running) return;
    try {
      for (const s of STREAM_SUBJECTS) subs.push(o.bus.subscribe(s, onMessage));
    } catch (err) {
      // The bus is closing (shutdown): the client gets its hello and no events.
      o.logger.warn('stream subscription failed', { err: errorText(err) });
      unsubscribe();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const bounded = new Promise<void>((res) => {
      timer = setTimeout(res, SUBSCRIBE_CONFIRM_MS);
      timer.unref();
    });
    const confirmed = Promise.resolve()
      .then(() => o.bus.flush())
      .catch((err: unknown) => o.logger.warn('stream subscription flush failed', { err: errorText(err) }));
    subscribed = Promise.race([confirmed, bounded]).finally(() => clearTimeout(timer));
  };
  const unsubscribe = (): void => {
    clearTimeout(linger);
    linger = undefined;
    for (const s of subs.splice(0)) s.unsubscribe();
    tenants.clear();
  };

  return {
    start() {
      running = true;
      offConnection ??= o.bus.onConnection(onConnection);
      if (clients > 0) subscribe();
    },
    stop() {
      running = false;
      offConnection?.();
      offConnection = undefined;
      for (const t of gapTimers.values()) clearTimeout(t);
      gapTimers.clear();
      unsubscribe();
      sinks.clear();
      clients = 0;
    },
    add(tenant, sink) {
      let set = sinks.get(tenant);
      if (!set) sinks.set(tenant, (set = new Set()));
      set.add(sink);
      clients++;
      subscribe();
      let removed = false;
      const remove = (): void => {
        if (removed) return;
        removed = true;
        const s = sinks.get(tenant);
        if (s?.delete(sink)) clients--;
        if (s && s.size === 0) sinks.delete(tenant);
        if (clients === 0 && subs.length > 0 && linger === undefined) {
          linger = setTimeout(() => {
            linger = undefined;
            if (clients === 0) unsubscribe();
          }, lingerMs);
          linger.unref();
        }
      };
      return { remove, subscribed };
    },
    noteTenant,
  };
}
