// Bare model, process 1: HTTP POST → 3 pipelined Redis writes → JetStream publish.
import { randomUUID } from 'node:crypto';
import express from 'express';
import { connectAll, enc, keys, onStop } from './common.mjs';

const { redis, nc, js } = await connectAll();
const app = express();
app.use(express.json({ limit: '2mb' }));
app.post('/jobs', async (req, res) => {
  const id = randomUUID();
  const now = Date.now();
  try {
    await redis.pipeline()
      .hset(keys.job(id), 'state', 'PENDING', 'topic', req.body.topic, 'created_at', now)
      .set(keys.ctx(id), JSON.stringify({ prompt: req.body.prompt }), 'PX', 3_600_000)
      .zadd(keys.index(), now, id)
      .exec();
    await js.publish('bare.submit', enc({ id, topic: req.body.topic }));
    res.json({ job_id: id });
  } catch (e) {
    res.status(500).json({ error: String(e) });
  }
});
const server = app.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'));
onStop(async () => { server.close(); await nc.drain(); redis.disconnect(); });
