// P231: a consumer that stops hands back every message the server sent it, so another replica
// on the durable gets it at once. stop() unsubscribed the pull inbox while pull requests were
// still open on the server, so what the server had sent in that moment was dropped in the
// client and came back only after AckWait (30 s): in a rolling restart of the schedulers, a
// submit or a result arriving as one stopped waited 30 s. Real nats-server; a replica is
// stopped and replaced again and again while messages keep coming.
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { subjects, type Bus, type Consumer, type HandlerOutcome } from '../src';
import { bus, dec, enc, uniqueQueue } from './helpers';

describe('a stopping consumer under a steady stream (one nats-server)', () => {
  let server: TestServer;
  let pub: Bus;
  let steady: Bus;
  let cycling: Bus;

  beforeAll(async () => {
    server = await startNats();
    [pub, steady, cycling] = await Promise.all([bus(server.url, 'handoff-pub'), bus(server.url, 'handoff-steady'), bus(server.url, 'handoff-cycling')]);
    await pub.ensureStreams();
  });

  afterAll(async () => {
    await Promise.all([pub?.close(), steady?.close(), cycling?.close()]);
    await server?.stop();
  });

  it('loses no message to AckWait: every one is handled within seconds while a replica stops and starts 8 times', async () => {
    const queue = uniqueQueue('handoff');
    const handled = new Map<string, number>();
    const handler = (id: string): Promise<HandlerOutcome> => {
      handled.set(id, (handled.get(id) ?? 0) + 1);
      return Promise.resolve({ kind: 'ack' });
    };
    const opts = { subject: subjects.submit, queue, decode: dec, handler, concurrency: 16 };
    const keeper = await steady.consume(opts);
    let publishing = true;
    let sent = 0;
    const publisher = (async () => {
      while (publishing) {
        const batch = Array.from({ length: 20 }, () => `m-${sent++}`);
        await Promise.all(batch.map((id) => pub.publish(subjects.submit, enc(id), { msgId: id })));
      }
    })();
    for (let cycle = 0; cycle < 8; cycle++) {
      const replica: Consumer = await cycling.consume(opts);
      const before = handled.size;
      await waitFor(() => handled.size >= before + 200, 10_000, { message: `cycle ${cycle}: messages flowing`, intervalMs: 5 });
      await replica.stop();
    }
    publishing = false;
    await publisher;
    // AckWait is 30 s: a message dropped by a stopping replica would take that long.
    await waitFor(() => handled.size === sent, 8_000, { message: `all ${sent} handled without waiting for AckWait (${sent - handled.size} missing)`, intervalMs: 20 });
    expect(sent).toBeGreaterThan(1_600);
    await keeper.stop();
  }, 60_000);
});
