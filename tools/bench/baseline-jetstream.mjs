// Baseline (a): raw JetStream round trips — publish → durable pull consumer → ack,
// with at most `inFlight` messages between publish and ack.
import { AckPolicy, connect } from 'nats';
import { percentiles, round, sleep } from './lib/index.mjs';

export async function runJetStreamBaseline({ natsUrl, durationS, warmupS, inFlight = 64 }) {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'BENCH_JS', subjects: ['bench.js'] });
    await jsm.consumers.add('BENCH_JS', { durable_name: 'bench-js', ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
    const js = nc.jetstream();
    const consumer = await js.consumers.get('BENCH_JS', 'bench-js');

    let slots = inFlight;
    let wake = null;
    let measuring = false;
    let done = 0;
    const lat = [];
    const messages = await consumer.consume({ max_messages: inFlight * 2 });
    const consumed = (async () => {
      for await (const m of messages) {
        m.ack();
        if (measuring) {
          done++;
          lat.push(performance.now() - m.data.readDoubleLE(0));
        }
        slots++;
        if (wake) { const w = wake; wake = null; w(); }
      }
    })();

    let stop = false;
    const producer = (async () => {
      const buf = Buffer.alloc(64);
      while (!stop) {
        if (slots === 0) { await new Promise((r) => (wake = r)); continue; }
        slots--;
        buf.writeDoubleLE(performance.now(), 0);
        js.publish('bench.js', buf).catch(() => { slots++; });
      }
    })();

    await sleep(warmupS * 1000);
    measuring = true;
    const t0 = performance.now();
    await sleep(durationS * 1000);
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    stop = true;
    if (wake) wake();
    await producer;
    messages.stop();
    await consumed;
    await jsm.streams.delete('BENCH_JS');
    const p = percentiles(lat);
    return { roundTripsPerS: round(done / elapsed, 0), inFlight, latencyMs: { p50: round(p.p50, 2), p99: round(p.p99, 2) } };
  } finally {
    await nc.close();
  }
}
