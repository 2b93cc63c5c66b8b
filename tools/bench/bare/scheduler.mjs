// Bare model, process 2: submit consumer takes a Redis lock (SET NX PX), writes
// DISPATCHED and publishes to the worker; the reply consumer writes the final state.
import { connectAll, consumeLoop, enc, keys, onStop } from './common.mjs';

const { redis, nc, js } = await connectAll();
const token = `bare-sched-${process.pid}`;
const a = await consumeLoop(nc, 'BARE_SUBMIT', 'bare-sched', 256, async ({ id, topic }) => {
  const got = await redis.set(keys.lock(id), token, 'PX', 30_000, 'NX');
  if (got !== 'OK') return;
  await redis.hset(keys.job(id), 'state', 'DISPATCHED', 'dispatched_at', Date.now());
  await js.publish('bare.work', enc({ id, topic }));
});
const b = await consumeLoop(nc, 'BARE_RESULT', 'bare-results', 256, async ({ id, result }) => {
  await redis.pipeline()
    .hset(keys.job(id), 'state', 'SUCCEEDED', 'finished_at', Date.now(), 'result', JSON.stringify(result))
    .del(keys.lock(id))
    .exec();
});
console.log('ready');
onStop(async () => { a.stop(); b.stop(); await nc.drain(); redis.disconnect(); });
