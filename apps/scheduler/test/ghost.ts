// A "ghost" worker for recovery tests: it heartbeats and handshakes (so the
// scheduler routes to it) but subscribes to nothing, like a worker that died
// right after its last heartbeat: every dispatch to it is lost in flight.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { create, encodePacket, HandshakeSchema, HeartbeatSchema, newPacket } from '@cordum/protocol';
import { quietLog } from './harness';

export interface Ghost {
  id: string;
  /** The load its next heartbeats report (of maxParallelJobs, 100 unless given). */
  setActiveJobs(n: number): void;
  stop(): Promise<void>;
}

export async function startGhost(o: { natsUrl: string; id: string; topics: string[]; startAck: boolean; activeJobs?: number; maxParallelJobs?: number; heartbeatMs?: number }): Promise<Ghost> {
  const bus: Bus = await connectBus({ servers: [o.natsUrl], name: `ghost:${o.id}`, logger: quietLog });
  let activeJobs = o.activeJobs ?? 0;
  const send = () => {
    bus.publishCore(
      subjects.handshake,
      encodePacket(newPacket(o.id, { case: 'handshake', value: create(HandshakeSchema, { componentId: o.id, readyTopics: [`worker.${o.id}.jobs`, ...o.topics], capabilities: { start_ack: o.startAck } }) })),
    );
    bus.publishCore(
      subjects.heartbeat,
      encodePacket(newPacket(o.id, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: o.id, pool: '', maxParallelJobs: o.maxParallelJobs ?? 100, activeJobs }) })),
    );
  };
  send();
  const timer = setInterval(send, o.heartbeatMs ?? 100);
  return {
    id: o.id,
    setActiveJobs: (n) => {
      activeJobs = n;
      send();
    },
    stop: async () => {
      clearInterval(timer);
      await bus.close();
    },
  };
}
