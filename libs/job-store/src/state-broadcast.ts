// D15 `sys.job.state` broadcasts, and what a replica says when some may not have left (P148).
// They are core NATS: one published while this replica's connection is down, or into a connection
// that is dead but not yet known to be (a silent node loss is noticed only after up to 3 PING
// intervals, 15 s), reached nobody. Every gateway's WebSocket clients would go on showing the old
// state, and their own gateway, whose connection stayed up, had no reason to send them a `gap`.
// So once the connection is back, a replica that broadcast anything in that window publishes one
// SystemAlert `state_broadcast_lost` on `sys.alert` (`details.since`: the earliest moment a lost
// broadcast may be from); every gateway turns it into a `gap` frame for all of its clients, and
// operators see it on their alert consumers.
import { subjects, type Bus, type BusLogger } from '@cordum/bus';
import { create, encodePacket, newPacket, SystemAlertSchema } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import type { JobRecord } from './types';
import { encodeStatePacket } from './wire';

/** The code of the alert a replica publishes when state broadcasts of its may have been lost. */
export const STATE_BROADCAST_LOST = 'state_broadcast_lost';

/**
 * How long before a noticed disconnect a publish may already have gone into a dead socket: the bus's
 * pingInterval 5 s × (maxPingOut 2 + 1) is 15 s (P260); it was 10 s × 3, and this stays 30 s, so
 * a replica paused for a while before the PINGs run out is still covered.
 */
export const DEAD_SOCKET_WINDOW_MS = 30_000;

export interface StateBroadcaster {
  /** Broadcasts the job's committed state (D15), or notes it as lost. */
  broadcast(job: Pick<JobRecord, 'id' | 'state' | 'traceId'>): void;
  stop(): void;
}

export function createStateBroadcaster(o: {
  bus: Pick<Bus, 'connected' | 'publishCore' | 'onConnection'>;
  senderId: string;
  /** The alert's `component`: the service name. */
  component: string;
  logger: BusLogger;
  now?: () => number;
}): StateBroadcaster {
  const now = o.now ?? clusterNow;
  /** The last broadcast handed to an open connection. */
  let lastSentAt = -Infinity;
  /** The earliest moment a lost broadcast may be from, while some may be; undefined when none. */
  let lostSince: number | undefined;
  let lost = 0;

  const noteLost = (at: number, count: number): void => {
    if (lostSince === undefined) o.logger.warn('job state broadcasts not published while NATS is away; a state_broadcast_lost alert follows the reconnect', {});
    lostSince = Math.min(lostSince ?? at, at);
    lost += count;
  };

  const announce = (): void => {
    if (lostSince === undefined) return;
    const since = new Date(lostSince).toISOString();
    const alert = create(SystemAlertSchema, {
      level: 'WARN',
      message: `job state broadcasts of ${o.senderId} may have been lost since ${since} (its NATS connection was down); streams should re-read the jobs they follow`,
      component: o.component,
      code: STATE_BROADCAST_LOST,
      details: { since, lost: String(lost), sender: o.senderId },
    });
    try {
      o.bus.publishCore(subjects.alert, encodePacket(newPacket(o.senderId, { case: 'alert', value: alert })));
    } catch (err) {
      o.logger.warn('state_broadcast_lost alert not published; tried again at the next reconnect', { err: err instanceof Error ? err.message : String(err) });
      return;
    }
    o.logger.info('state_broadcast_lost alert published', { since, lost });
    lostSince = undefined;
    lost = 0;
  };

  const off = o.bus.onConnection((connected) => {
    const t = now();
    if (!connected) {
      // What went out shortly before the loss was noticed may be in a dead socket.
      if (lastSentAt >= t - DEAD_SOCKET_WINDOW_MS) noteLost(t - DEAD_SOCKET_WINDOW_MS, 0);
      return;
    }
    announce();
  });

  return {
    broadcast(job) {
      const t = now();
      if (!o.bus.connected) {
        noteLost(t, 1);
        return;
      }
      try {
        o.bus.publishCore(subjects.state, encodeStatePacket(o.senderId, job, t));
        lastSentAt = t;
      } catch {
        noteLost(t, 1);
      }
    },
    stop: off,
  };
}
