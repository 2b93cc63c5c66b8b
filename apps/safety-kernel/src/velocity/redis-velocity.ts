import { clusterNow, defineScripts, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import { safetyKeys } from '../keys';
import type { VelocityOutcome, VelocityPort, VelocityQuery } from '../policy/evaluator';
import peekLua from './lua/velocity-peek-1.lua';
import recordLua from './lua/velocity-record-1.lua';

function toOutcome(raw: unknown): VelocityOutcome {
  // Fail closed on a malformed reply: treat as over the limit with a short retry.
  if (!Array.isArray(raw) || raw.length < 3) return { over: true, count: 0, retryAfterMs: 1000 };
  const [over, count, retry, added] = raw.map((v) => Number(v));
  return { over: over === 1, count: count ?? 0, retryAfterMs: retry ?? 0, ...(added === 1 ? { added: true } : {}) };
}

/** Sliding-window velocity in Redis (D20). `now` is injectable for tests of window expiry. */
export function createRedisVelocity(redis: RedisClient, opts: { now?: () => number } = {}): VelocityPort {
  const scripts: ScriptRunner = defineScripts(redis, [scriptSpec('velocity-record-1.lua', recordLua), scriptSpec('velocity-peek-1.lua', peekLua)]);
  const now = opts.now ?? clusterNow;
  const call = async (name: string, q: VelocityQuery): Promise<VelocityOutcome> =>
    toOutcome(await scripts.run(name, [safetyKeys.velocity(q.ruleId, q.keyKind, q.keyValue)], [now(), q.windowMs, q.maxRequests, q.jobId]));
  return {
    record: (q) => call('velocity-record', q),
    peek: (q) => call('velocity-peek', q),
    unrecord: async (q) => {
      await redis.zrem(safetyKeys.velocity(q.ruleId, q.keyKind, q.keyValue), q.jobId);
    },
  };
}
