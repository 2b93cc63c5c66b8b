// Fan-out of bus broadcasts to this replica's WebSocket clients, per tenant.
// sys.job.state / sys.job.progress carry no tenant (wire types unchanged), so
// the job's tenant is read once from its record and cached (a job never changes
// tenant). Lookups run in parallel but events are delivered in arrival order,
// so one client sees a job's states in the order they were published.
import { Counter, type Registry } from 'prom-client';
import type { Bus, Subscription } from '@cordum/bus';
import { jobKeys } from '@cordum/job-store';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { STREAM_SUBJECTS, decodeStreamPacket, type PendingEvent, type StreamEvent } from './events';

const TENANT_CACHE_MAX = 100_000;
/** Events waiting for a tenant lookup; beyond this the hub drops (Redis is slow or down) rather than grow. */
const MAX_PENDING = 10_000;
const LOOKUP_TIMEOUT_MS = 1_000;

export type StreamSink = (json: string) => void;

export interface StreamHub {
  start(): void;
  stop(): void;
  /** Registers a sink for one tenant; returns its removal. */
  add(tenant: string, sink: StreamSink): () => void;
  /** Primes the tenant cache (jobs this replica created). */
  noteTenant(jobId: string, tenant: string): void;
}

export function createStreamHub(o: { bus: Bus; redis: RedisClient; logger: Logger; registry: Registry }): StreamHub {
  const sinks = new Map<string, Set<StreamSink>>();
  let clients = 0;
  const tenants = new Map<string, string>();
  const subs: Subscription[] = [];
  let pending = 0;
  let chain: Promise<void> = Promise.resolve();
  const dropped = new Counter({ name: 'cordum_ws_events_dropped_total', help: 'Bus events not delivered to WebSocket clients', labelNames: ['reason'], registers: [o.registry] });
  const delivered = new Counter({ name: 'cordum_ws_events_total', help: 'Bus events fanned out to WebSocket clients', labelNames: ['type'], registers: [o.registry] });

  const noteTenant = (jobId: string, tenant: string): void => {
    if (tenants.size >= TENANT_CACHE_MAX && !tenants.has(jobId)) {
      const oldest = tenants.keys().next();
      if (!oldest.done) tenants.delete(oldest.value);
    }
    tenants.set(jobId, tenant);
  };

  const lookupTenant = async (jobId: string): Promise<string | undefined> => {
    const hit = tenants.get(jobId);
    if (hit !== undefined) return hit;
    if (o.redis.status !== 'ready') return undefined;
    let raw: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    try {
      raw = await Promise.race([
        o.redis.hget(jobKeys.meta(jobId), 'tenant'),
        new Promise<null>((r) => (timer = setTimeout(() => r(null), LOOKUP_TIMEOUT_MS))),
      ]);
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
    if (raw === null) return undefined;
    try {
      const t = JSON.parse(raw) as unknown;
      if (typeof t !== 'string') return undefined;
      noteTenant(jobId, t);
      return t;
    } catch {
      return undefined;
    }
  };

  const resolve = async (p: PendingEvent): Promise<StreamEvent | null> => {
    const tenant = p.tenant ?? (p.jobId !== undefined ? await lookupTenant(p.jobId) : undefined);
    return tenant === undefined ? null : ({ ...p.body, tenant } as StreamEvent);
  };

  const deliver = (ev: StreamEvent | null, type: string): void => {
    if (!ev) {
      dropped.inc({ reason: 'no_tenant' });
      return;
    }
    const set = sinks.get(ev.tenant);
    if (!set || set.size === 0) return;
    const json = JSON.stringify(ev);
    delivered.inc({ type });
    for (const sink of set) sink(json);
  };

  const onMessage = (data: Uint8Array, subject: string): void => {
    if (clients === 0) return; // nobody listens here: skip decoding and lookups
    let p: PendingEvent | null;
    try {
      p = decodeStreamPacket(subject, data);
    } catch {
      dropped.inc({ reason: 'undecodable' });
      return;
    }
    if (!p) return;
    if (pending >= MAX_PENDING) {
      dropped.inc({ reason: 'backlog' });
      return;
    }
    pending++;
    const type = p.body.type;
    const resolved = resolve(p);
    chain = chain.then(async () => {
      let ev: StreamEvent | null = null;
      try {
        ev = await resolved;
      } finally {
        pending--;
      }
      deliver(ev, type);
    }).catch((err: unknown) => o.logger.warn('stream delivery failed', { err: err instanceof Error ? err.message : String(err) }));
  };

  return {
    start() {
      for (const s of STREAM_SUBJECTS) subs.push(o.bus.subscribe(s, onMessage));
    },
    stop() {
      for (const s of subs.splice(0)) s.unsubscribe();
      sinks.clear();
      clients = 0;
    },
    add(tenant, sink) {
      let set = sinks.get(tenant);
      if (!set) sinks.set(tenant, (set = new Set()));
      set.add(sink);
      clients++;
      let removed = false;
      return () => {
        if (removed) return;
        removed = true;
        const s = sinks.get(tenant);
        if (s?.delete(sink)) clients--;
        if (s && s.size === 0) sinks.delete(tenant);
      };
    },
    noteTenant,
  };
}
