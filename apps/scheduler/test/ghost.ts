// A "ghost" worker for recovery tests: it heartbeats and handshakes (so the
// scheduler routes to it) but subscribes to nothing, like a worker that died
// right after its last heartbeat: every dispatch to it is lost in flight.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { create, encodePacket, HandshakeSchema, HeartbeatSchema, newPacket } from '@cordum/protocol';
import { quietLog } from './harness';

export interface Ghost {
  id: string;
  stop(): Promise<void>;
}

export async function startGhost(o: { natsUrl: string; id: string; topics: string[]; startAck: boolean; activeJobs?: number }): Promise<Ghost> {
  const bus: Bus = await connectBus({ servers: [o.natsUrl], name: `ghost:${o.id}`, logger: quietLog });
  const send = () => {
    bus.publishCore(
      subjects.handshake,
      encodePacket(newPacket(o.id, { case: 'handshake', value: create(HandshakeSchema, { componentId: o.id, readyTopics: [`worker.${o.id}.jobs`, ...o.topics], capabilities: { start_ack: o.startAck } }) })),
    );
    bus.publishCore(
      subjects.heartbeat,
      encodePacket(newPacket(o.id, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: o.id, pool: '', maxParallelJobs: 100, activeJobs: o.activeJobs ?? 0 }) })),
    );
  };
  send();
  const timer = setInterval(send, 100);
  return {
    id: o.id,
    stop: async () => {
      clearInterval(timer);
      await bus.close();
    },
  };
}
