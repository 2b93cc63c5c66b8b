// Growth preload (issue 7 item 4): terminal history and a pending backlog on a
// topic nobody serves, written through the job-store's own createJob so records,
// ctx and indexes are exactly what the services write. Terminal jobs are then
// finished the way a transition leaves them (record fields JSON-encoded, raw
// state, state index moved, out of the in-flight index `job:active:PENDING`,
// result stored).
import { randomUUID } from 'node:crypto';

/** The topic of the pending backlog: no pool maps it and no worker serves it. */
export const GROWTH_TOPIC = 'job.bench.unserved';

async function pool(n, width, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++);
  }));
}

export async function preload(cordum, { redisUrl, terminal, pending, tenant = 'default', onProgress }) {
  const redis = cordum.createRedis({ url: redisUrl, clusterAddresses: [], poolSize: 20, minIdleConns: 1, name: 'bench:preload', commandTimeoutMs: 0 });
  const k = cordum.jobKeys;
  const store = cordum.createJobStore(redis, { jobTtlMs: 7 * 24 * 3600 * 1000 });
  const base = {
    tenant, traceId: '', priority: 'batch', labels: {}, context: null, principalId: 'bench',
    riskTags: [], requires: [], initialState: 'PENDING',
    safety: { decision: 'allow', reason: '', ruleId: '', policySnapshot: 'bench' },
  };
  const t0 = Date.now();
  try {
    await pool(terminal, 128, async (i) => {
      const id = randomUUID();
      const job = await store.createJob({ ...base, id, traceId: randomUUID(), topic: 'job.echo', prompt: `history ${i}` });
      const t = job.createdAt;
      await redis.pipeline()
        .set(k.res(id), JSON.stringify({ echo: `history ${i}` }), 'PX', 7 * 24 * 3600 * 1000)
        .hset(k.meta(id), 'state', 'SUCCEEDED', 'updatedAt', JSON.stringify(t), 'dispatchedAt', JSON.stringify(t), 'finishedAt', JSON.stringify(t),
          'attempts', '1', 'resultPtr', JSON.stringify(k.resPtr(id)), 'workerId', JSON.stringify('bench-history'))
        .zrem(k.indexState(tenant, 'PENDING'), id)
        .zrem(k.active('PENDING'), id)
        .zadd(k.indexState(tenant, 'SUCCEEDED'), t, id)
        .exec();
      if (onProgress && i % 20_000 === 0) onProgress(`terminal ${i}/${terminal}`);
    });
    await pool(pending, 128, async (i) => {
      await store.createJob({ ...base, id: randomUUID(), traceId: randomUUID(), topic: GROWTH_TOPIC, prompt: `backlog ${i}` });
    });
  } finally {
    await cordum.closeRedis(redis);
  }
  return { terminal, pending, seconds: Math.round((Date.now() - t0) / 100) / 10 };
}
