// Shared bits of the bare-pipeline model (baseline c): connections and a JetStream consume loop.
import { Redis } from 'ioredis';
import { AckPolicy, connect } from 'nats';

export const enc = (o) => Buffer.from(JSON.stringify(o));
export const dec = (b) => JSON.parse(Buffer.from(b).toString('utf8'));
export const keys = {
  job: (id) => `bare:job:{${id}}`,
  ctx: (id) => `bare:ctx:{${id}}`,
  lock: (id) => `bare:lock:{${id}}`,
  index: () => 'bare:index',
};

export async function connectAll() {
  const redis = new Redis(process.env.REDIS_URL, { enableAutoPipelining: true, maxRetriesPerRequest: 2 });
  const nc = await connect({ servers: process.env.NATS_URL });
  return { redis, nc, js: nc.jetstream() };
}

/** Processes a durable pull consumer with up to `inFlight` handlers running; ack after the handler. */
export async function consumeLoop(nc, stream, durable, inFlight, handler) {
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const consumer = await nc.jetstream().consumers.get(stream, durable);
  const messages = await consumer.consume({ max_messages: inFlight });
  void (async () => {
    for await (const m of messages) {
      handler(dec(m.data)).then(() => m.ack(), () => m.nak());
    }
  })();
  return messages;
}

export function onStop(fn) {
  const stop = async () => { try { await fn(); } finally { process.exit(0); } };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}
