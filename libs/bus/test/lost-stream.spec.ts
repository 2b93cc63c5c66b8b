// A nats-server that lost CORDUM_SYS with its store (decisions.md P45): the
// running consumer's pull ends ("stream not found"), and re-binding its durable
// kept failing, since the stream was gone too and ensureStreams ran only at
// start: every publish failed until the services were restarted. The consumer
// now creates the stream again and resumes.
import { startNats, waitFor, type TestServer } from '@cordum/testing';
import { connect, type NatsConnection } from 'nats';
import { Registry } from 'prom-client';
import { STREAM_SYS, connectBus, subjects, type Bus, type HandlerOutcome } from '../src';
import { dec, enc, testLogger, uniqueQueue, type CapturingLogger } from './helpers';

let server: TestServer;
let bus: Bus;
let raw: NatsConnection;
let logger: CapturingLogger;

beforeAll(async () => {
  server = await startNats();
  logger = testLogger();
  bus = await connectBus({ servers: [server.url], name: 'bus-lost-stream', logger, registry: new Registry() });
  await bus.ensureStreams();
  raw = await connect({ servers: server.url });
});

afterAll(async () => {
  await raw?.close();
  await bus?.close();
  await server?.stop();
});

it('a consumer whose stream is gone creates it again and goes on consuming; publishes work again', async () => {
  const got: string[] = [];
  const consumer = await bus.consume({
    subject: subjects.result, queue: uniqueQueue('lost'), decode: dec,
    handler: (body): Promise<HandlerOutcome> => { got.push(body); return Promise.resolve({ kind: 'ack' }); },
  });
  await bus.publish(subjects.result, enc('before'), { msgId: 'lost:before' });
  await waitFor(() => got.includes('before'), 10_000, { message: 'consumed before the loss' });

  const jsm = await raw.jetstreamManager();
  await jsm.streams.delete(STREAM_SYS); // what a server that lost its store has: no stream, no durable
  await waitFor(async () => (await jsm.streams.info(STREAM_SYS).then(() => true, () => false)), 15_000, { message: 'CORDUM_SYS created again' });
  expect(logger.lines.some((l) => l.msg === 'bus: stream not found (the server lost its store?), creating it again')).toBe(true);

  await waitFor(async () => {
    await bus.publish(subjects.result, enc('after'), { msgId: 'lost:after' });
    return got.includes('after');
  }, 15_000, { message: 'consumed after the stream came back' });
  await consumer.stop();
});
