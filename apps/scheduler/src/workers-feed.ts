// Broadcast subscriptions (per replica, no queue group) feeding the registry.
import { subjects, type Subscription } from '@cordum/bus';
import type { SchedulerContext } from './context';

export function subscribeWorkers(ctx: SchedulerContext): Subscription[] {
  const onPacket = (subject: string, apply: (data: Uint8Array) => void) =>
    ctx.bus.subscribe(subject, (data) => {
      try {
        apply(data);
      } catch {
        // Undecodable broadcast: counted and dropped (fail closed: the worker is not routable).
        ctx.metrics.decodeErrors.inc({ subject });
      }
    });
  return [
    onPacket(subjects.heartbeat, (data) => {
      const p = ctx.decodeWorkerPacket(data);
      if (p.payload.case === 'heartbeat') ctx.workers.onHeartbeat(p.payload.value);
    }),
    onPacket(subjects.handshake, (data) => {
      const p = ctx.decodeWorkerPacket(data);
      if (p.payload.case === 'handshake') ctx.workers.onHandshake(p.payload.value);
    }),
  ];
}
