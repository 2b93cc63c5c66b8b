// Broadcast subscriptions (per replica, no queue group) feeding the registry.
import { subjects, type Subscription } from '@cordum/bus';
import { decodePacket, timestampMs, type BusPacket } from '@cordum/protocol';
import { createLogThrottle, errorText } from '@cordum/service-kit';
import type { SchedulerContext } from './context';

/** A refused worker packet is logged at most once per this long per sender and reason (P220). */
export const REFUSED_LOG_EVERY_MS = 60_000;

export function subscribeWorkers(ctx: SchedulerContext): Subscription[] {
  const mayLog = createLogThrottle(REFUSED_LOG_EVERY_MS);
  /**
   * P220: a worker whose heartbeats are refused (a wrong or missing signature, a malformed packet)
   * is missing from routing and from GET /workers, and its topic's jobs wait for "no worker"; the
   * counter alone did not say who. The sender is read from the packet without verifying it (only
   * to name it in the log; nothing else uses it).
   */
  const refused = (subject: string, data: Uint8Array, err: unknown): void => {
    ctx.metrics.decodeErrors.inc({ subject });
    let sender = '';
    try {
      sender = decodePacket(data).senderId;
    } catch {
      sender = '(undecodable)';
    }
    const error = errorText(err);
    if (!mayLog(`${subject}\u0000${sender}\u0000${error}`)) return;
    ctx.logger.warn('worker packet refused; the worker is not routable until its packets are accepted', { subject, sender_id: sender, error });
  };
  // Decoded (and verified) inside the try, applied outside it: a fault in the registry is not a
  // refused packet, and is logged by the bus (`bus: subscription handler threw`).
  const onPacket = (subject: string, apply: (p: BusPacket) => void) =>
    ctx.bus.subscribe(subject, (data) => {
      let p: BusPacket;
      try {
        p = ctx.decodeWorkerPacket(data);
      } catch (err) {
        // Fail closed: the worker is not routable.
        refused(subject, data, err);
        return;
      }
      apply(p);
    });
  // P243: with verification on, a heartbeat's created_at is signed, so a capture published again
  // (it needs no key) is told from the worker's next one by it; unsigned ones can be forged anyway.
  const signed = ctx.config.capVerifyKey !== undefined;
  return [
    onPacket(subjects.heartbeat, (p) => {
      if (p.payload.case !== 'heartbeat' || !p.payload.value.workerId) return;
      const hb = p.payload.value;
      // A packet without created_at (validation does not require one) is not checked: 0 for it
      // would have refused every heartbeat after its worker's first.
      const sentAt = signed && p.createdAt ? timestampMs(p.createdAt) : undefined;
      if (ctx.workers.onHeartbeat(hb, sentAt) || sentAt === undefined) return;
      ctx.metrics.ignored.inc({ kind: 'heartbeat', reason: 'replayed' });
      if (mayLog(`replayed\u0000${hb.workerId}`)) {
        ctx.logger.warn('worker heartbeat not newer than its last one ignored (published again, or its clock went back)', { worker_id: hb.workerId });
      }
    }),
    onPacket(subjects.handshake, (p) => {
      if (p.payload.case === 'handshake') ctx.workers.onHandshake(p.payload.value);
    }),
  ];
}
