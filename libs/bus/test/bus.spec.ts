import { freePort, repoRoot, startNats, startProcess, waitFor, Latch, type TestServer } from '@cordum/testing';
import { connect, nanos, type JetStreamManager, type NatsConnection } from 'nats';
import { Registry } from 'prom-client';
import { STREAM_SYS, durableName, isBusError, subjects, type Bus, type HandlerOutcome } from '../src';
import { bus, dec, enc, uniqueQueue } from './helpers';

async function counterValue(registry: Registry, name: string, subject: string): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => v.labels['subject'] === subject)?.value ?? 0;
}

/** Names of the client connections the server holds, from its monitoring endpoint. */
async function connNames(monitorPort: number): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/connz`);
  const body = (await res.json()) as { connections?: { name?: string }[] };
  return (body.connections ?? []).map((c) => c.name ?? '');
}

describe('@cordum/bus on one nats-server', () => {
  let server: TestServer;
  let monitorPort: number;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  let a: Bus;
  let b: Bus;
  const registry = new Registry();

  beforeAll(async () => {
    monitorPort = await freePort();
    server = await startNats({ args: ['-m', String(monitorPort)] });
    raw = await connect({ servers: server.url, name: 'bus-test-raw' });
    jsm = await raw.jetstreamManager();
    [a, b] = await Promise.all([bus(server.url, 'bus-a', registry), bus(server.url, 'bus-b', registry)]);
  });

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await raw?.close();
    await server?.stop();
  });

  // Each test starts from an empty stream so a new durable (deliver all) sees only its own messages.
  beforeEach(async () => {
    if ((await jsm.streams.names().next()).includes(STREAM_SYS)) await jsm.streams.purge(STREAM_SYS);
  });

  it('ensureStreams is idempotent and safe concurrently: one CORDUM_SYS with the D10 settings', async () => {
    await Promise.all([a.ensureStreams(), b.ensureStreams(), a.ensureStreams()]);
    await b.ensureStreams();
    const names = await jsm.streams.names().next();
    expect(names).toEqual([STREAM_SYS]);
    const { config } = await jsm.streams.info(STREAM_SYS);
    expect([...config.subjects].sort()).toEqual(['sys.audit.export', 'sys.job.cancel', 'sys.job.dlq', 'sys.job.result', 'sys.job.submit']);
    expect(config.retention).toBe('limits');
    expect(config.discard).toBe('old');
    expect(config.max_age).toBe(nanos(24 * 3600 * 1000));
    expect(config.max_bytes).toBe(1024 ** 3);
    expect(config.num_replicas).toBe(1); // standalone server: min(3, 1)
  });

  it('a durable queue consumer shared by two buses handles each of 200 messages exactly once', async () => {
    const queue = 'cordum-scheduler';
    expect(durableName(queue, subjects.submit)).toBe('dur_cordum-scheduler__sys_job_submit');
    const seen = new Map<string, number>();
    const byBus = { a: 0, b: 0 };
    const handler = (who: 'a' | 'b') => async (id: string): Promise<HandlerOutcome> => {
      // A little simulated work so both replicas hold messages at the same time.
      await new Promise((r) => setTimeout(r, 5));
      seen.set(id, (seen.get(id) ?? 0) + 1);
      byBus[who] += 1;
      return { kind: 'ack' };
    };
    const ca = await a.consume({ subject: subjects.submit, queue, decode: dec, handler: handler('a'), concurrency: 4 });
    const cb = await b.consume({ subject: subjects.submit, queue, decode: dec, handler: handler('b'), concurrency: 4 });
    for (let i = 0; i < 200; i++) await a.publish(subjects.submit, enc(`job-${i}`), { msgId: `jobreq:job-${i}:1:0` });
    await waitFor(() => seen.size === 200, 30_000, { message: '200 handled' });
    await waitFor(async () => (await jsm.consumers.info(STREAM_SYS, 'dur_cordum-scheduler__sys_job_submit')).num_ack_pending === 0);
    const info = await jsm.consumers.info(STREAM_SYS, 'dur_cordum-scheduler__sys_job_submit');
    expect(info.num_pending).toBe(0);
    expect(info.num_redelivered).toBe(0);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(byBus.a + byBus.b).toBe(200);
    expect(byBus.a).toBeGreaterThan(0);
    expect(byBus.b).toBeGreaterThan(0);
    expect(info.config).toMatchObject({
      durable_name: 'dur_cordum-scheduler__sys_job_submit', filter_subject: subjects.submit, ack_policy: 'explicit',
      ack_wait: nanos(30_000), max_deliver: 20, max_ack_pending: 1024,
    });
    await Promise.all([ca.stop(), cb.stop()]);
  });

  it('backlog: undelivered and unacked messages of a durable, and when the newest delivered one was stored', async () => {
    await a.ensureStreams();
    const queue = uniqueQueue('backlog');
    const release = new Latch<void>();
    const started = new Latch<void>();
    const c = await a.consume({
      subject: subjects.submit, queue, decode: dec, concurrency: 1,
      handler: async () => { started.open(); await release.wait(30_000); return { kind: 'ack' }; },
    });
    expect(await a.backlog(queue, subjects.submit)).toEqual({ undelivered: 0, unacked: 0, newestDeliveredAt: null });
    const t0 = Date.now();
    for (let i = 0; i < 6; i++) {
      // Messages of another subject in the same stream are neither counted nor taken as the newest delivered.
      await a.publish(subjects.result, enc(`other-${i}`), { msgId: `backlog-other-${i}` });
      await a.publish(subjects.submit, enc(`b-${i}`), { msgId: `backlog-${i}` });
    }
    const t1 = Date.now();
    await started.wait(10_000);
    // One handler runs and nats.js may have pulled one more ahead: 1–2 delivered and unacked.
    // A reading between two consumer infos that agree on the newest delivered message, so a
    // pull-ahead landing meanwhile cannot make it compare against another message.
    const deliveredSeq = async (): Promise<number> => (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.submit))).delivered.stream_seq;
    const { held, seq } = await waitFor(async () => {
      const before = await deliveredSeq();
      const b = await a.backlog(queue, subjects.submit);
      return b.unacked >= 1 && (await deliveredSeq()) === before ? { held: b, seq: before } : undefined;
    }, 5_000, { message: 'one delivered, a stable reading' });
    expect(held.undelivered + held.unacked).toBe(6);
    expect(held.unacked).toBeLessThanOrEqual(2);
    const newest = await jsm.streams.getMessage(STREAM_SYS, { seq });
    expect(newest.subject).toBe(subjects.submit);
    expect(held.newestDeliveredAt).toBe(newest.time.getTime());
    // the server's clock is this machine's
    expect(held.newestDeliveredAt).toBeGreaterThanOrEqual(t0 - 1_000);
    expect(held.newestDeliveredAt).toBeLessThanOrEqual(t1 + 1_000);
    release.open();
    await waitFor(async () => (await a.backlog(queue, subjects.submit)).unacked === 0, 10_000, { message: 'all acked' });
    expect(await a.backlog(queue, subjects.submit)).toEqual({ undelivered: 0, unacked: 0, newestDeliveredAt: null });
    await c.stop();
    await expect(a.backlog(uniqueQueue('never-created'), subjects.submit)).rejects.toThrow();
  });

  it('unackedSince: null with nothing held; while one is held, when the message at the ack floor was stored (P227)', async () => {
    await a.ensureStreams();
    const queue = uniqueQueue('unacked');
    let hold = false;
    const release = new Latch<void>();
    const held = new Latch<void>();
    const c = await a.consume({
      subject: subjects.submit, queue, decode: dec, concurrency: 1,
      handler: async () => {
        if (hold) {
          held.open();
          await release.wait(30_000);
        }
        return { kind: 'ack' };
      },
    });
    await a.publish(subjects.submit, enc('u-0'), { msgId: 'unacked-0' });
    await waitFor(async () => (await a.backlog(queue, subjects.submit)).unacked === 0 && (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.submit))).ack_floor.stream_seq > 0, 10_000, { message: 'the first acked' });
    expect(await a.unackedSince(queue, subjects.submit)).toBeNull();
    const floor = (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.submit))).ack_floor.stream_seq;
    const floorTime = (await jsm.streams.getMessage(STREAM_SYS, { seq: floor })).time.getTime();
    hold = true;
    await a.publish(subjects.submit, enc('u-1'), { msgId: 'unacked-1' });
    await held.wait(10_000);
    // every unacknowledged message was stored no earlier than this
    expect(await a.unackedSince(queue, subjects.submit)).toBe(floorTime);
    release.open();
    await waitFor(async () => (await a.unackedSince(queue, subjects.submit)) === null, 10_000, { message: 'nothing held' });
    await c.stop();
  });

  it('acks only after the effect: a replica that dies mid-handler without acking lets the other one redeliver', async () => {
    const queue = uniqueQueue('crash');
    const doomed = await bus(server.url, 'bus-doomed', registry);
    const gotByDoomed = new Latch<number>();
    await doomed.consume({
      subject: subjects.result, queue, decode: dec, ackWaitMs: 1_000, stopTimeoutMs: 50,
      handler: (_m, ctx) => { gotByDoomed.open(ctx.deliveryCount); return new Promise<HandlerOutcome>(() => undefined); },
    });
    await a.publish(subjects.result, enc('r-1'), { msgId: 'res-crash-1' });
    expect(await gotByDoomed.wait()).toBe(1);
    const gotBySurvivor = new Latch<{ body: string; deliveryCount: number }>();
    const survivor = await b.consume({
      subject: subjects.result, queue, decode: dec, ackWaitMs: 1_000,
      handler: (body, ctx) => { gotBySurvivor.open({ body, deliveryCount: ctx.deliveryCount }); return Promise.resolve({ kind: 'ack' }); },
    });
    await doomed.close(); // the handler never resolved: no ack left the process
    expect(await gotBySurvivor.wait(10_000)).toEqual({ body: 'r-1', deliveryCount: 2 });
    await waitFor(async () => (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.result))).num_ack_pending === 0);
    await survivor.stop();
  });

  it('working() keeps a handler that outlives AckWait from being redelivered', async () => {
    const queue = uniqueQueue('slow');
    let deliveries = 0;
    const done = new Latch();
    const handler = async (): Promise<HandlerOutcome> => {
      deliveries += 1;
      await new Promise((r) => setTimeout(r, 7_000)); // the effect takes 2.3 × AckWait
      done.open();
      return { kind: 'ack' };
    };
    // AckWait 3 s: working() goes out at most every 1.5 s, so a stalled jest worker has 1.5 s
    // before the server redelivers (at 1 s it had 0.5 s, which a loaded box could exceed)
    const c1 = await a.consume({ subject: subjects.cancel, queue, decode: dec, ackWaitMs: 3_000, handler });
    const c2 = await b.consume({ subject: subjects.cancel, queue, decode: dec, ackWaitMs: 3_000, handler });
    await a.publish(subjects.cancel, enc('c-1'));
    await done.wait(15_000);
    await waitFor(async () => (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.cancel))).num_ack_pending === 0);
    const info = await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.cancel));
    expect(info.num_redelivered).toBe(0);
    expect(deliveries).toBe(1);
    await Promise.all([c1.stop(), c2.stop()]);
  });

  it('working() goes on when the host clock is set back while a handler runs (P293)', async () => {
    const queue = uniqueQueue('stepped');
    let deliveries = 0;
    const started = new Latch();
    const done = new Latch();
    const handler = async (): Promise<HandlerOutcome> => {
      deliveries += 1;
      started.open();
      await new Promise((r) => setTimeout(r, 7_000)); // 2.3 × AckWait
      done.open();
      return { kind: 'ack' };
    };
    const c = await a.consume({ subject: subjects.cancel, queue, decode: dec, ackWaitMs: 3_000, handler });
    const real = Date.now.bind(Date);
    try {
      await a.publish(subjects.cancel, enc('c-stepped'));
      await started.wait(10_000);
      // NTP steps the clock back a minute: working()'s due times, taken on it, were a minute away
      const stepped = jest.spyOn(Date, 'now').mockImplementation(() => real() - 60_000);
      try {
        await done.wait(15_000);
      } finally {
        stepped.mockRestore();
      }
      await waitFor(async () => (await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.cancel))).num_ack_pending === 0);
      expect((await jsm.consumers.info(STREAM_SYS, durableName(queue, subjects.cancel))).num_redelivered).toBe(0);
      expect(deliveries).toBe(1);
    } finally {
      await c.stop();
    }
  });

  it('nak with delay redelivers after at least the delay; term stops redelivery', async () => {
    const queue = uniqueQueue('naks');
    const times = new Map<string, number[]>();
    const acked = new Latch();
    const c = await a.consume({
      subject: subjects.dlq, queue, decode: dec, ackWaitMs: 1_000,
      handler: (body, ctx) => {
        times.set(body, [...(times.get(body) ?? []), Date.now()]);
        if (body === 'retry') {
          if (ctx.deliveryCount === 1) return Promise.resolve({ kind: 'nak', delayMs: 700 });
          acked.open();
          return Promise.resolve({ kind: 'ack' });
        }
        return Promise.resolve({ kind: 'term', reason: 'poison' });
      },
    });
    await a.publish(subjects.dlq, enc('term-me'));
    await a.publish(subjects.dlq, enc('retry'));
    await acked.wait(10_000);
    const [t1, t2] = times.get('retry')!;
    expect(t2! - t1!).toBeGreaterThanOrEqual(690); // timer granularity
    const durable = durableName(queue, subjects.dlq);
    const streamLast = (await jsm.streams.info(STREAM_SYS)).state.last_seq;
    // Terminated and acked messages both move the ack floor; nothing is pending or redelivering.
    await waitFor(async () => {
      const i = await jsm.consumers.info(STREAM_SYS, durable);
      return i.num_ack_pending === 0 && i.ack_floor.stream_seq === streamLast;
    });
    expect((await jsm.consumers.info(STREAM_SYS, durable)).num_redelivered).toBe(0);
    expect(times.get('term-me')).toHaveLength(1);
    await c.stop();
  });

  it('a message that reaches a replica while its event loop is stalled across the end of a pull is handled at once, not after AckWait (P14)', async () => {
    await a.ensureStreams();
    const queue = uniqueQueue('stall');
    const got = new Latch<{ at: number; deliveryCount: number }>();
    const c = await a.consume({
      subject: subjects.dlq, queue, decode: dec,
      handler: (_m, ctx) => { got.open({ at: Date.now(), deliveryCount: ctx.deliveryCount }); return Promise.resolve({ kind: 'ack' }); },
    });
    // The consumer's first pull went out just now and expires on the server 5 s later. Another
    // process publishes shortly before that; this one does not run (a GC pause, CPU starvation
    // on a loaded box) from before the publish until after the expiry. When it runs again, the
    // message, the server's end-of-pull status and every timer that came due are all waiting.
    // The stall starts 1.5 s before the pull's end and the publish 1.2 s before it: room for the
    // publisher's late timer and a slow store on a loaded box (at 4.7 s and 4.85 s, 150 ms was not).
    const pulledAt = Date.now();
    const stallAt = pulledAt + 3_500;
    const publishAt = pulledAt + 3_800;
    const publisher = startProcess('stall-publisher', process.execPath, ['-e', `
      const { connect } = require('nats');
      (async () => {
        const nc = await connect({ servers: '${server.url}' });
        await new Promise((r) => setTimeout(r, Math.max(0, ${publishAt} - Date.now())));
        console.log('sending ' + Date.now());
        await nc.jetstream().publish('${subjects.dlq}', new TextEncoder().encode('during the stall'));
        console.log('published ' + Date.now());
        await nc.close();
      })().catch((e) => { console.error(String(e)); process.exit(1); });
    `], {}, repoRoot);
    await waitFor(() => Date.now() >= stallAt, 10_000, { intervalMs: 10 }); // the fault starts
    for (;;) if (Date.now() >= pulledAt + 5_800) break; // the stall (busy: nothing else runs here)
    await publisher.waitExit(10_000);
    const sentAt = Number(/sending (\d+)/.exec(publisher.logs())?.[1]);
    const publishedAt = Number(/published (\d+)/.exec(publisher.logs())?.[1]);
    const landedAt = (await jsm.streams.getMessage(STREAM_SYS, { last_by_subj: subjects.dlq })).time.getTime();
    expect(sentAt).toBeGreaterThan(stallAt); // it landed inside the stall
    expect(landedAt).toBeLessThan(pulledAt + 5_000); // while the pull was still open on the server (the stream's time)
    const { at, deliveryCount } = await got.wait(10_000); // AckWait is 30 s: a dropped delivery would come back only then
    expect({ deliveryCount, handledWithinMs: at - publishedAt < 3_000 }).toEqual({ deliveryCount: 1, handledWithinMs: true });
    await c.stop();
  });

  it('a handler that throws is nak-ed, counted, redelivered, and the consumer keeps going', async () => {
    const queue = uniqueQueue('throws');
    const before = await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit);
    const handled = new Latch<number>();
    const c = await a.consume({
      subject: subjects.audit, queue, decode: dec,
      handler: (_b, ctx) => {
        if (ctx.deliveryCount === 1) throw new Error('boom');
        handled.open(ctx.deliveryCount);
        return Promise.resolve({ kind: 'ack' });
      },
    });
    await a.publish(subjects.audit, enc('x'));
    expect(await handled.wait(10_000)).toBe(2);
    expect(await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit)).toBe(before + 1);
    expect(await counterValue(registry, 'cordum_bus_redeliveries_total', subjects.audit)).toBeGreaterThanOrEqual(1);
    await c.stop();
  });

  /** 4 s: working() at most every 2 s, so a stalled jest worker has 2 s before a redelivery. */
  const HELD_ACK_WAIT_MS = 4_000;

  /**
   * A consumer (concurrency 4, AckWait HELD_ACK_WAIT_MS) whose handler throws `fails(body)` when it names an
   * error ('redis down': unavailable, P101; 'slot moving': retryInPlace, P259), recording each
   * message's delivery counts as tried and the one it was handled on.
   */
  async function failingConsumer(queue: string, fails: (body: string) => 'redis down' | 'slot moving' | undefined) {
    const tries = new Map<string, number[]>();
    const done = new Map<string, number>();
    const c = await a.consume({
      subject: subjects.audit, queue, decode: dec, concurrency: 4, ackWaitMs: HELD_ACK_WAIT_MS,
      unavailable: (err) => (err as Error).message === 'redis down',
      retryInPlace: (err) => (err as Error).message === 'slot moving',
      handler: (body, ctx) => {
        tries.set(body, [...(tries.get(body) ?? []), ctx.deliveryCount]);
        const err = fails(body);
        if (err) throw new Error(err);
        done.set(body, ctx.deliveryCount);
        return Promise.resolve({ kind: 'ack' });
      },
    });
    return { c, tries, done };
  }

  it('a handler that finds a shared dependency down keeps its message: retried in process without spending deliveries, and nothing new is pulled meanwhile (P101)', async () => {
    const queue = uniqueQueue('held');
    const heldBefore = await counterValue(registry, 'cordum_bus_held_total', subjects.audit);
    const errorsBefore = await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit);
    let down = true;
    const { c, tries, done } = await failingConsumer(queue, () => (down ? 'redis down' : undefined));
    const t0 = performance.now();
    await a.publish(subjects.audit, enc('first'));
    await waitFor(() => (tries.get('first')?.length ?? 0) >= 3, 5_000, { message: 'the first message is retried in process' });
    await a.publish(subjects.audit, enc('second'));
    // Longer than AckWait: working() keeps the held message, and the second is not pulled.
    await waitFor(() => performance.now() - t0 > HELD_ACK_WAIT_MS + 500 && (tries.get('first')?.length ?? 0) >= 5, 15_000, { message: 'still retried past AckWait' });
    expect(tries.get('second')).toBeUndefined();
    down = false;
    await waitFor(() => done.size === 2, 10_000, { message: 'both handled once the dependency is back' });
    expect(new Set(tries.get('first'))).toEqual(new Set([1]));
    expect(done.get('first')).toBe(1);
    // P231: a message that reaches the holding replica's last open pull is handed back unhandled
    // (a NAK past that pull's life), so it may be on its second delivery.
    expect(done.get('second')).toBeLessThanOrEqual(2);
    expect(await counterValue(registry, 'cordum_bus_held_total', subjects.audit)).toBe(heldBefore + 1);
    expect(await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit)).toBe(errorsBefore);
    await c.stop();
  });

  it('P259: a message whose data is briefly unreachable (a hash slot moving) is retried in place while the consumer goes on with the others', async () => {
    const queue = uniqueQueue('in-place');
    const heldBefore = await counterValue(registry, 'cordum_bus_held_total', subjects.audit);
    const errorsBefore = await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit);
    let moving = true;
    const { c, tries, done } = await failingConsumer(queue, (body) => (body === 'in-slot' && moving ? 'slot moving' : undefined));
    const t0 = performance.now();
    await a.publish(subjects.audit, enc('in-slot'));
    await waitFor(() => (tries.get('in-slot')?.length ?? 0) >= 3, 5_000, { message: 'retried in process' });
    // Unlike a shared outage's hold (P101), the others are pulled and handled meanwhile.
    for (const body of ['other-1', 'other-2']) await a.publish(subjects.audit, enc(body));
    await waitFor(() => done.has('other-1') && done.has('other-2'), 5_000, { message: 'the others handled while one is retried' });
    // Past AckWait: working() keeps it, on its first delivery.
    await waitFor(() => performance.now() - t0 > HELD_ACK_WAIT_MS + 500 && (tries.get('in-slot')?.length ?? 0) >= 6, 15_000, { message: 'still retried past AckWait' });
    moving = false;
    await waitFor(() => done.has('in-slot'), 10_000, { message: 'handled once the slot settled' });
    expect(new Set(tries.get('in-slot'))).toEqual(new Set([1]));
    expect(await counterValue(registry, 'cordum_bus_held_total', subjects.audit)).toBe(heldBefore);
    expect(await counterValue(registry, 'cordum_bus_handler_errors_total', subjects.audit)).toBe(errorsBefore);
    await c.stop();
  });

  it('P259: past a quarter of the handler slots retried in place, the next such message is held; a held message whose error turns local goes in place and lets the consumer pull again', async () => {
    const queue = uniqueQueue('in-place-cap');
    const heldBefore = await counterValue(registry, 'cordum_bus_held_total', subjects.audit);
    let moving = true;
    let down = true;
    const { c, tries, done } = await failingConsumer(queue, (body) => {
      if (body === 'flip' && down) return 'redis down';
      return body !== 'other' && moving ? 'slot moving' : undefined;
    });
    // concurrency 4: one message in place at a time; the second is held, as for a shared outage.
    await a.publish(subjects.audit, enc('slot-a'));
    await waitFor(() => (tries.get('slot-a')?.length ?? 0) >= 2, 5_000, { message: 'the first retried in place' });
    await a.publish(subjects.audit, enc('slot-b'));
    await waitFor(async () => (await counterValue(registry, 'cordum_bus_held_total', subjects.audit)) === heldBefore + 1, 5_000, { message: 'the second held' });
    moving = false;
    await waitFor(() => done.has('slot-a') && done.has('slot-b'), 15_000, { message: 'both handled once the slot settled' });
    expect([done.get('slot-a'), done.get('slot-b')]).toEqual([1, 1]);
    // A message held for Redis down whose error becomes a moving slot stops holding the consumer.
    moving = true;
    await a.publish(subjects.audit, enc('flip'));
    await waitFor(async () => (await counterValue(registry, 'cordum_bus_held_total', subjects.audit)) === heldBefore + 2, 5_000, { message: 'flip held' });
    down = false;
    await waitFor(() => (tries.get('flip')?.length ?? 0) >= 3, 10_000, { message: 'flip retried in place' });
    await a.publish(subjects.audit, enc('other'));
    await waitFor(() => done.has('other'), 8_000, { message: 'the consumer pulls again while flip waits in place' });
    expect(done.has('flip')).toBe(false);
    moving = false;
    await waitFor(() => done.has('flip'), 15_000, { message: 'flip handled' });
    expect(new Set(tries.get('flip'))).toEqual(new Set([1]));
    await c.stop();
  });

  it('a held message is NAKed after holdMaxMs, spending one delivery, and an error that is not unavailability is NAKed at once', async () => {
    const queue = uniqueQueue('held-cap');
    const seen: { body: string; deliveryCount: number; at: number }[] = [];
    const handled = new Latch<void>();
    const start = Date.now();
    const c = await a.consume({
      subject: subjects.audit, queue, decode: dec, holdMaxMs: 600,
      unavailable: (err) => (err as Error).message === 'redis down',
      handler: (body, ctx) => {
        seen.push({ body, deliveryCount: ctx.deliveryCount, at: Date.now() - start });
        if (body === 'held' && ctx.deliveryCount === 1) throw new Error('redis down');
        if (body === 'bug' && ctx.deliveryCount === 1) throw new Error('a bug');
        if (seen.filter((s) => s.deliveryCount === 2).length === 2) handled.open();
        return Promise.resolve({ kind: 'ack' });
      },
    });
    await a.publish(subjects.audit, enc('bug'));
    await waitFor(() => seen.some((s) => s.body === 'bug' && s.deliveryCount === 2), 5_000, { message: 'the bug is redelivered' });
    expect(seen.filter((s) => s.body === 'bug').map((s) => s.deliveryCount)).toEqual([1, 2]);
    await a.publish(subjects.audit, enc('held'));
    await handled.wait(10_000);
    const held = seen.filter((s) => s.body === 'held');
    const firstDelivery = held.filter((s) => s.deliveryCount === 1);
    expect(firstDelivery.length).toBeGreaterThanOrEqual(2);
    expect(held.at(-1)!.deliveryCount).toBe(2);
    expect(held.at(-1)!.at - firstDelivery[0]!.at).toBeGreaterThanOrEqual(600);
    await c.stop();
  });

  it('an undecodable packet is terminated after exactly 3 deliveries, counted, and valid ones still flow', async () => {
    const queue = uniqueQueue('undecodable');
    const before = await counterValue(registry, 'cordum_bus_undecodable_total', subjects.submit);
    let badDecodes = 0;
    const good: string[] = [];
    const c = await a.consume({
      subject: subjects.submit, queue,
      decode: (d) => {
        const s = dec(d);
        if (s.startsWith('bad')) {
          badDecodes += 1;
          throw new Error('not a BusPacket');
        }
        return s;
      },
      handler: (s) => { good.push(s); return Promise.resolve({ kind: 'ack' }); },
    });
    await a.publish(subjects.submit, enc('bad-1'));
    await a.publish(subjects.submit, enc('good-1'));
    await waitFor(async () => (await counterValue(registry, 'cordum_bus_undecodable_total', subjects.submit)) === before + 1, 10_000);
    await a.publish(subjects.submit, enc('good-2'));
    const durable = durableName(queue, subjects.submit);
    const last = (await jsm.streams.info(STREAM_SYS)).state.last_seq;
    await waitFor(async () => {
      const i = await jsm.consumers.info(STREAM_SYS, durable);
      return good.length === 2 && i.num_ack_pending === 0 && i.ack_floor.stream_seq === last;
    }, 10_000);
    expect(badDecodes).toBe(3);
    expect(good).toEqual(['good-1', 'good-2']);
    await c.stop();
  });

  it('de-duplicates by msgId: the same id published twice is stored once', async () => {
    const subject = subjects.audit;
    await a.publish(subject, enc('one'), { msgId: 'audit:dedup:1' });
    await b.publish(subject, enc('one again'), { msgId: 'audit:dedup:1' });
    expect((await jsm.streams.info(STREAM_SYS)).state.messages).toBe(1);
    await a.publish(subject, enc('two'), { msgId: 'audit:dedup:2' });
    expect((await jsm.streams.info(STREAM_SYS)).state.messages).toBe(2);
  });

  it('a publish no stream accepts fails with a typed error after retrying ≤ 2 s', async () => {
    const started = Date.now();
    const err: unknown = await a.publish('cordum.test.nostream', enc('x'), { msgId: 'nostream-1' }).catch((e: unknown) => e);
    expect(isBusError(err, 'bus_publish_failed')).toBe(true);
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(await counterValue(registry, 'cordum_bus_publish_retries_total', 'cordum.test.nostream')).toBeGreaterThan(0);
  });

  it('core subscriptions: a queue group splits messages, plain subscriptions each get all', async () => {
    const subject = `cordum.test.core.${process.pid}`;
    const queued = { a: 0, b: 0 };
    const plain = { a: 0, b: 0 };
    const subs = [
      a.subscribe(subject, () => { queued.a += 1; }, { queue: 'cordum-scheduler' }),
      b.subscribe(subject, () => { queued.b += 1; }, { queue: 'cordum-scheduler' }),
      a.subscribe(subject, () => { plain.a += 1; }),
      b.subscribe(subject, (_d, s) => { if (s === subject) plain.b += 1; }),
    ];
    await Promise.all([a.flush(), b.flush()]);
    for (let i = 0; i < 50; i++) a.publishCore(subject, enc(String(i)));
    await a.flush();
    // Each message reaches its queue member and the plain subscriptions together: once both plain
    // ones have all 50, every queue delivery has happened too.
    await waitFor(() => plain.a === 50 && plain.b === 50);
    expect(queued.a + queued.b).toBe(50);
    expect(queued.a).toBeGreaterThan(0);
    expect(queued.b).toBeGreaterThan(0);
    subs.forEach((s) => s.unsubscribe());
    subs.forEach((s) => s.unsubscribe()); // idempotent
  });

  it('connectBus fails fast with a typed error when nothing listens', async () => {
    const port = await freePort();
    await expect(bus(`nats://127.0.0.1:${port}`, 'bus-nowhere')).rejects.toMatchObject({ code: 'bus_connect_failed' });
  });

  it('close() is idempotent, flips connected, and later calls fail with bus_closed', async () => {
    const c = await bus(server.url, 'bus-close');
    const consumer = await c.consume({ subject: subjects.submit, queue: uniqueQueue('close'), decode: dec, handler: () => Promise.resolve({ kind: 'ack' }) });
    expect(c.connected).toBe(true);
    await Promise.all([c.close(), c.close()]);
    await c.close();
    await consumer.stop();
    expect(c.connected).toBe(false);
    expect(() => c.publishCore('x', enc('y'))).toThrow(expect.objectContaining({ code: 'bus_closed' }) as Error);
    await expect(c.publish(subjects.submit, enc('y'))).rejects.toMatchObject({ code: 'bus_closed' });
    await waitFor(async () => !(await connNames(monitorPort)).includes('bus-close'));
    expect(await connNames(monitorPort)).toEqual(expect.arrayContaining(['bus-a', 'bus-b']));
  });
});

