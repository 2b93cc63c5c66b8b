// Baseline (c): the bare pipeline as three processes (tools/bench/bare/*.mjs).
import { join } from 'node:path';
import { connect } from 'nats';
import { freePort, start, waitUntil } from './procs.mjs';

const STREAMS = [['BARE_SUBMIT', 'bare.submit'], ['BARE_WORK', 'bare.work'], ['BARE_RESULT', 'bare.result']];

/**
 * `nodeOptions`, `nodeArgs`: the stack's (its NODE_OPTIONS heap limit, extra node flags), so stack ÷
 * bare compares code, not V8 settings.
 */
export async function startBare(root, { redisUrl, natsUrl, nodeOptions, nodeArgs = [] }) {
  const nc = await connect({ servers: natsUrl });
  const jsm = await nc.jetstreamManager();
  for (const [name, subject] of STREAMS) await jsm.streams.add({ name, subjects: [subject] });
  const port = await freePort();
  const env = { REDIS_URL: redisUrl, NATS_URL: natsUrl, PORT: String(port), ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) };
  const procs = ['worker', 'scheduler', 'gateway'].map((n) => {
    const p = start(`bare-${n}`, process.execPath, [...nodeArgs, join(root, 'tools/bench/bare', `${n}.mjs`)], { env });
    p.service = `bare-${n}`;
    return p;
  });
  const stop = async () => {
    for (const p of [...procs].reverse()) await p.stop();
    for (const [name] of STREAMS) await jsm.streams.delete(name).catch(() => undefined);
    await nc.close();
  };
  try {
    await Promise.all(procs.map((p) => waitUntil(() => {
      if (!p.running()) throw new Error(`${p.name} exited: ${p.tail.join(' | ')}`);
      return p.tail.includes('ready');
    }, 20_000, p.name)));
  } catch (e) {
    await stop();
    throw e;
  }
  return { procs, url: `http://127.0.0.1:${port}`, stop };
}
