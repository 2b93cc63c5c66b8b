// Helpers for the HA / chaos end-to-end tests: bulk submit across gateways,
// job state read straight from Redis (CONTRACT §5 `job:meta:{<id>}`; reading
// 1,000 jobs through HTTP each poll would load the 2-core CI box more than the
// system under test), and Prometheus counters scraped from the schedulers.
import { existsSync, readFileSync } from 'node:fs';
import { closeRedis, createRedis, scanKeys, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { api, pool, type Stack } from '../test/stack';

export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'DENIED']);

export function redisFor(stack: Stack): RedisClient {
  return createRedis({ url: stack.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
}
export { closeRedis };

/** CONTRACT §5 / D4 keys of a job record, its lock and the lock's fence counter. */
const metaKey = (id: string): string => `job:meta:{${id}}`;
const lockKey = (id: string): string => `cordum:scheduler:job:{${id}}`;
const fenceKey = (id: string): string => `job:fence:{${id}}`;

/** Job locks whose value (`<instance>:<fence>`, D4) names `owner`, read right now. */
export async function locksHeldBy(redis: RedisClient, owner: string): Promise<{ id: string; token: string }[]> {
  const out: { id: string; token: string }[] = [];
  for await (const key of scanKeys(redis, 'cordum:scheduler:job:{*}')) {
    const token = await redis.get(key);
    const id = /^cordum:scheduler:job:\{(.+)\}$/.exec(key)?.[1];
    if (id && token?.startsWith(`${owner}:`)) out.push({ id, token });
  }
  return out;
}

/**
 * Takes a free job lock the way a replica does (D4: fence = INCR job:fence:{id}, lock = owner:fence,
 * SET NX with a TTL); false when someone holds it.
 */
export async function stealLock(redis: RedisClient, id: string, owner: string, ttlMs: number): Promise<boolean> {
  const fence = await redis.incr(fenceKey(id));
  return (await redis.set(lockKey(id), `${owner}:${fence}`, 'PX', ttlMs, 'NX')) === 'OK';
}

export async function jobFields(redis: RedisClient, id: string): Promise<Record<string, unknown>> {
  const h = await redis.hgetall(metaKey(id));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) out[k] = k === 'state' ? v : (JSON.parse(v) as unknown);
  return out;
}

export async function states(redis: RedisClient, ids: string[]): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  await pool(ids, 50, async (id) => {
    out.set(id, await redis.hget(metaKey(id), 'state'));
  });
  return out;
}

/** Submits `n` echo jobs round-robin over the gateways; `onSubmitted` sees the running count. */
export async function submitMany(stack: Stack, n: number, o: { topic?: string; prefix: string; concurrency?: number; onSubmitted?: (count: number) => void }): Promise<string[]> {
  let done = 0;
  const items = Array.from({ length: n }, (_, i) => i);
  return pool(items, o.concurrency ?? 20, async (i) => {
    const url = stack.gatewayUrls[i % stack.gatewayUrls.length] ?? stack.gatewayUrl;
    const res = await api({ gatewayUrl: url }, 'POST', '/api/v1/jobs', { topic: o.topic ?? 'job.echo', prompt: `${o.prefix} ${i}` });
    if (res.status !== 200) throw new Error(`submit ${i} via ${url}: ${res.status} ${JSON.stringify(res.body)}`);
    done += 1;
    o.onSubmitted?.(done);
    return res.body['job_id'] as string;
  });
}

/** Polls until every job is terminal; returns the final states. */
export async function waitTerminal(redis: RedisClient, ids: string[], timeoutMs: number): Promise<Map<string, string | null>> {
  let pending = [...ids];
  const final = new Map<string, string | null>();
  let last = '';
  try {
    await waitFor(
      async () => {
        const s = await states(redis, pending);
        for (const [id, st] of s) if (st && TERMINAL.has(st)) final.set(id, st);
        pending = pending.filter((id) => !final.has(id));
        last = pending.slice(0, 5).map((id) => `${id}=${s.get(id)}`).join(', ');
        return pending.length === 0;
      },
      timeoutMs,
      { intervalMs: 250 },
    );
  } catch {
    throw new Error(`${pending.length} of ${ids.length} jobs not terminal after ${timeoutMs} ms (e.g. ${last})`);
  }
  return final;
}

/** Sum of a counter over every scheduler's /metrics, filtered by a label substring. */
export async function schedulerCounter(stack: Stack, name: string, labelMatch: string): Promise<number> {
  let total = 0;
  for (const [proc, port] of stack.healthPorts) {
    if (!proc.startsWith('scheduler-') || !stack.procs.get(proc)?.running) continue;
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
      for (const line of text.split('\n')) if (line.startsWith(name) && line.includes(labelMatch)) total += Number(line.split(' ').pop());
    } catch {
      // a frozen or restarting replica: counted on the next scrape
    }
  }
  return total;
}

/**
 * Dispatches (job + dispatch id) the workers ran more than once, per their own logs. A job may
 * legitimately run again under a new attempt after its worker reported FAILED_RETRYABLE (D1 c);
 * one attempt must never run twice.
 */
export function dispatchesRunTwice(stack: Stack, ids: string[]): string[] {
  const want = new Set(ids);
  const seen = new Map<string, number>();
  for (const f of stack.execLogs) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const rec = JSON.parse(line) as { job_id: string; dispatch_id: string };
      if (!want.has(rec.job_id)) continue;
      const k = `${rec.job_id}/${rec.dispatch_id}`;
      seen.set(k, (seen.get(k) ?? 0) + 1);
    }
  }
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}

/** Jobs executed more than once, and jobs never executed, per the workers' own logs. */
export function executionAudit(stack: Stack, ids: string[]): { twice: string[]; never: string[] } {
  const ex = stack.executions();
  return { twice: ids.filter((id) => (ex.get(id) ?? 0) > 1), never: ids.filter((id) => (ex.get(id) ?? 0) === 0) };
}

/** For a failed audit: what the store says about the given jobs (state, error, attempts, dispatch). */
export async function describeJobs(redis: RedisClient, ids: string[]): Promise<unknown[]> {
  return Promise.all(
    ids.slice(0, 5).map(async (id) => {
      const j = await jobFields(redis, id);
      return { id, state: j['state'], error: j['error'], attempts: j['attempts'], dispatch: j['dispatch'], scheduleTries: j['scheduleTries'] };
    }),
  );
}
