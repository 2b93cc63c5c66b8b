import { rmSync } from 'node:fs';
import { canConnect, startNats, startProcess, waitFor, type ManagedProcess, type TestServer } from '@cordum/testing';
import { Registry } from 'prom-client';
import { connect, type NatsConnection } from 'nats';
import { STREAM_SYS, connectBus, durableName, subjects, type Bus, type HandlerOutcome } from '../src';
import { dec, enc, testLogger, uniqueQueue, type CapturingLogger } from './helpers';

describe('@cordum/bus across a nats-server restart', () => {
  let server: TestServer;
  let restarted: ManagedProcess | undefined;
  let bus: Bus;
  let logger: CapturingLogger;

  beforeAll(async () => {
    server = await startNats();
    logger = testLogger();
    bus = await connectBus({ servers: [server.url], name: 'bus-reconnect', logger, registry: new Registry() });
    await bus.ensureStreams();
  });

  afterAll(async () => {
    await bus?.close();
    await restarted?.stop(5_000);
    await server?.stop(); // stops the first process (already gone) and removes the store dir
    rmSync(server.dir, { recursive: true, force: true });
  });

  it('the existing consumer resumes after the server restarts on the same port and store; connected goes false then true', async () => {
    const got: string[] = [];
    const queue = uniqueQueue('reconnect');
    const consumer = await bus.consume({
      subject: subjects.result, queue, decode: dec,
      handler: (body): Promise<HandlerOutcome> => { got.push(body); return Promise.resolve({ kind: 'ack' }); },
    });
    await bus.publish(subjects.result, enc('before'), { msgId: 'reconnect:before' });
    await waitFor(() => got.includes('before'));
    expect(bus.connected).toBe(true);
    // The handler returning is not the server holding the ack (acks are sent after the handler, batched);
    // wait until the consumer's ack floor shows it, so "acked before the restart" is true when we stop.
    const raw = await connect({ servers: server.url });
    const jsm = await raw.jetstreamManager();
    await waitFor(async () => (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.result))).num_ack_pending === 0,
      10_000, { message: 'ack recorded by the server' });
    await raw.close();

    // Graceful: JetStream writes the consumer's ack floor to the store dir on its way out. The
    // harness's stop() turns to SIGKILL after its grace, which on a busy CI machine lost that ack
    // (and 'before' came again): wait for the SIGTERM to finish instead, and fail if it does not.
    server.process.kill('SIGTERM');
    await server.process.waitExit(30_000);
    await waitFor(() => !bus.connected, 10_000, { message: 'connected=false' });

    restarted = startProcess(`nats-restarted:${server.port}`, 'nats-server', ['-a', '127.0.0.1', '-p', String(server.port), '-js', '-sd', server.dir]);
    await waitFor(() => canConnect(server.port), 10_000, { message: 'restarted server listening' });
    await waitFor(() => bus.connected, 15_000, { message: 'connected=true' });
    // JetStream recovers the stream from disk before it answers; wait for it rather than racing the publish.
    await waitFor(() => restarted?.hasLine(/Server is ready/), 10_000);

    await bus.publish(subjects.result, enc('after'), { msgId: 'reconnect:after' });
    await waitFor(() => got.includes('after'), 20_000, { message: 'consumed after restart' });
    // 'before' was acked, and the server showed the ack, before the restart; nats-server 2.9 writes
    // the consumer's ack floor to its store lazily, and even after a graceful SIGTERM fresh-clone CI
    // once saw it come again (8fdb3c6). A redelivery is JetStream's at-least-once, which every
    // consumer of ours handles (D8); what this test owns is the consumer resuming, so it allows that
    // one redelivery and no more.
    expect(got.filter((b) => b === 'before').length).toBeLessThanOrEqual(2);
    expect(got.filter((b) => b === 'after')).toHaveLength(1);
    expect(logger.lines.some((l) => l.msg === 'bus: disconnected from NATS')).toBe(true);
    expect(logger.lines.some((l) => l.msg === 'bus: reconnected to NATS')).toBe(true);
    await consumer.stop();
  });
});

describe('@cordum/bus publish when the connection drops', () => {
  let server: TestServer;
  let bus: Bus;
  let raw: NatsConnection;
  const registry = new Registry();

  beforeAll(async () => {
    server = await startNats();
    bus = await connectBus({ servers: [server.url], name: 'bus-drop', logger: testLogger(), registry });
    raw = await connect({ servers: server.url, name: 'bus-drop-holder', maxReconnectAttempts: 0 });
  });

  afterAll(async () => {
    await bus?.close();
    if (raw && !raw.isClosed()) await raw.close();
    await server?.stop();
  });

  it('a publish waiting for its ack is retried as soon as the connection drops, not after its ack timeout', async () => {
    const subject = 'cordum.test.held';
    // A plain subscriber takes the message and never acks it, so the publish waits (its attempt times out after 1 s).
    let held = false;
    raw.subscribe(subject, { callback: () => { held = true; } });
    await raw.flush();
    const retries = async (): Promise<number> => (await registry.getSingleMetric('cordum_bus_publish_retries_total')?.get())?.values.find((v) => v.labels['subject'] === subject)?.value ?? 0;
    const publishedAt = Date.now();
    const publishing = bus.publish(subject, enc('x'), { msgId: 'held-1' }).catch((e: unknown) => e);
    await waitFor(() => held, 5_000, { message: 'message reached the holder' });
    expect(await retries()).toBe(0);
    server.process.kill('SIGKILL');
    await waitFor(async () => (await retries()) >= 1, 5_000, { message: 'publish retried' });
    // Failing in-flight publishes on the disconnect retries at once; without it the attempt would
    // wait out its 1 s timeout, counted from the publish (the one window where the two differ;
    // from the kill, 800 ms left a loaded machine ~150 ms less than this).
    expect(Date.now() - publishedAt).toBeLessThan(1_000);
    await publishing; // ends with bus_publish_failed once its 2 s budget is spent (the server stays down)
  });

  it('close() while the server is down closes the connection (it does not go on reconnecting)', async () => {
    // nats.js's drain() resolves without closing when its final flush fails; the bus closes it then.
    await bus.close();
    expect((bus as unknown as { nc: NatsConnection }).nc.isClosed()).toBe(true);
  });
});
