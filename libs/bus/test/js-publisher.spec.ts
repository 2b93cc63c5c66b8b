import { startNats, type TestServer } from '@cordum/testing';
import { connect, DiscardPolicy, ErrorCode, StorageType, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { jsApiError, JsPublisher } from '../src/js-publisher';
import { enc } from './helpers';

/** The nats.js error code and JetStream API error of a rejection, or 'resolved'. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    const e = err as { code?: unknown; api_error?: { err_code?: unknown; code?: unknown } };
    return { code: e.code, apiErrCode: e.api_error?.err_code, apiCode: e.api_error?.code };
  }
}

describe('JsPublisher: JetStream publish over one reply inbox', () => {
  let server: TestServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let js: JetStreamClient;
  let pub: JsPublisher;

  beforeAll(async () => {
    server = await startNats();
    nc = await connect({ servers: server.url, name: 'js-publisher-spec' });
    jsm = await nc.jetstreamManager();
    js = nc.jetstream();
    pub = new JsPublisher(nc);
    await jsm.streams.add({ name: 'PUBSPEC', subjects: ['pubspec.>'], storage: StorageType.Memory });
    await jsm.streams.add({ name: 'ONEONLY', subjects: ['oneonly.>'], storage: StorageType.Memory, max_msgs: 1, discard: DiscardPolicy.New });
  });

  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await server?.stop();
  });

  it('resolves once the stream stored the message; a repeated msg id is stored once (D9)', async () => {
    // 10 s ack deadlines: this is about storage and dedup, and a loaded box can stall past 1 s
    await Promise.all(Array.from({ length: 50 }, (_, i) => pub.publish('pubspec.a', enc(`m${i}`), `id-${i}`, 10_000)));
    await pub.publish('pubspec.a', enc('again'), 'id-7', 10_000);
    await pub.publish('pubspec.a', enc('no id'), undefined, 10_000);
    const info = await jsm.streams.info('PUBSPEC');
    expect(info.state.messages).toBe(51);
    const m = await jsm.streams.getMessage('PUBSPEC', { seq: 8 });
    expect(m.header.get('Nats-Msg-Id')).toBe('id-7');
    expect(new TextDecoder().decode(m.data)).toBe('m7');
  });

  it('rejects as js.publish does when no stream takes the subject: NoResponders, at once (not a timeout)', async () => {
    const t0 = Date.now();
    const ours = await outcome(pub.publish('nostream.x', enc('x'), 'ns-1', 5_000));
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(ours).toEqual(await outcome(js.publish('nostream.x', enc('x'), { msgID: 'ns-2', timeout: 5_000 })));
    expect(ours).toMatchObject({ code: ErrorCode.NoResponders });
  });

  it('rejects as js.publish does when the stream refuses the message (JetStream API error in the ack)', async () => {
    await pub.publish('oneonly.a', enc('first'), 'one-1', 1_000);
    const ours = await outcome(pub.publish('oneonly.a', enc('second'), 'one-2', 1_000));
    expect(ours).toEqual(await outcome(js.publish('oneonly.a', enc('third'), { msgID: 'one-3', timeout: 1_000 })));
    expect(ours).toMatchObject({ apiErrCode: 10077, apiCode: 503 });
  });

  it('rejects with Timeout when nothing answers by the deadline', async () => {
    const silent = nc.subscribe('silent.x', { callback: () => undefined });
    try {
      const t0 = Date.now();
      const ours = await outcome(pub.publish('silent.x', enc('x'), 'silent-1', 300));
      const took = Date.now() - t0;
      expect(ours).toEqual({ code: ErrorCode.Timeout, apiErrCode: undefined, apiCode: undefined });
      expect(took).toBeGreaterThanOrEqual(290);
      expect(ours).toEqual(await outcome(js.publish('silent.x', enc('x'), { msgID: 'silent-2', timeout: 300 })));
    } finally {
      silent.unsubscribe();
    }
  });

  it('failAll rejects every publish in flight (a disconnect) and a later reply is ignored', async () => {
    const held: string[] = [];
    const holder = nc.subscribe('held.x', { callback: (_e, m) => { if (m.reply) held.push(m.reply); } });
    try {
      const inFlight = [pub.publish('held.x', enc('a'), 'h-1', 5_000), pub.publish('held.x', enc('b'), 'h-2', 5_000)].map(outcome);
      await nc.flush();
      while (held.length < 2) await new Promise((r) => setImmediate(r));
      pub.failAll(ErrorCode.Disconnect);
      expect(await Promise.all(inFlight)).toEqual([
        { code: ErrorCode.Disconnect, apiErrCode: undefined, apiCode: undefined },
        { code: ErrorCode.Disconnect, apiErrCode: undefined, apiCode: undefined },
      ]);
      // The replies come after all: nothing to resolve, nothing thrown.
      for (const r of held) nc.publish(r, enc(JSON.stringify({ stream: 'HELD', seq: 1 })));
      await nc.flush();
      expect(await outcome(pub.publish('pubspec.after', enc('x'), 'after-1', 1_000))).toBe('resolved');
    } finally {
      holder.unsubscribe();
    }
  });

  it('close() rejects what is in flight with ConnectionClosed', async () => {
    const other = new JsPublisher(nc);
    const silent = nc.subscribe('silent.y', { callback: () => undefined });
    try {
      const p = outcome(other.publish('silent.y', enc('x'), 'c-1', 5_000));
      other.close();
      expect(await p).toEqual({ code: ErrorCode.ConnectionClosed, apiErrCode: undefined, apiCode: undefined });
    } finally {
      silent.unsubscribe();
    }
  });

  it('throws at once on a closed connection', async () => {
    const c = await connect({ servers: server.url });
    const p = new JsPublisher(c);
    await c.close();
    expect(() => p.publish('pubspec.z', enc('x'), 'z-1', 1_000)).toThrow(expect.objectContaining({ code: ErrorCode.ConnectionClosed }) as Error);
  });
});

describe('jsApiError', () => {
  it('gives every ack error the code and message nats.js gives it (checkJsErrorCode)', () => {
    // Not part of nats.js's exported API: read from its build only to compare against.
    const { checkJsErrorCode } = require('nats/lib/jetstream/jsutil') as { checkJsErrorCode: (code: number, description?: string) => Error & { code: string } };
    const cases: [number, string][] = [[404, 'No Messages'], [408, 'Request Timeout'], [409, 'Idle Heartbeats Missed'], [409, 'Exceeded MaxAckPending'], [503, 'JetStream not enabled'], [400, 'Bad Request'], [500, ''], [10077, 'maximum messages exceeded']];
    for (const [code, description] of cases) {
      const ours = jsApiError(code, description);
      const theirs = checkJsErrorCode(code, description);
      expect({ code, description, err: [ours.code, ours.message] }).toEqual({ code, description, err: [theirs.code, theirs.message] });
    }
  });
});
