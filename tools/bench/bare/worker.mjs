// Bare model, process 3: the worker echoes each job back over JetStream.
import { connectAll, consumeLoop, enc, onStop } from './common.mjs';

const { redis, nc, js } = await connectAll();
redis.disconnect();
const c = await consumeLoop(nc, 'BARE_WORK', 'bare-worker', 256, async ({ id }) => {
  await js.publish('bare.result', enc({ id, result: { echo: true } }));
});
console.log('ready');
onStop(async () => { c.stop(); await nc.drain(); });
