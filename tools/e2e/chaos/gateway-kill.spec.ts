// "Kill any replica at any moment": the api-gateway's turn. Two gateways, two
// schedulers and two echo workers; a client submits jobs with an Idempotency-Key
// each, half through each gateway, and retries on the other gateway whatever a
// dead connection or a 503 / 409 idempotency_in_progress cut short, as a client
// behind a load balancer does. Mid-run one gateway gets SIGKILL with requests in
// flight, some of them between their idempotency claim, their job record and
// their publish (D25, D8/D13). Every key must end with exactly one job in Redis,
// that job SUCCEEDED, run exactly once by the workers (their exec logs).
import type { RedisClient } from '@cordum/redis';
import { scanKeys } from '@cordum/redis';
import { closeRedis, executionAudit, redisFor, waitTerminal } from './ha-helpers';
import { API_KEY, pool, startStack, type Stack } from '../test/stack';

const JOBS = 300;
/** The killed gateway's 2xx answers before the SIGKILL: it dies busy. */
const KILL_AFTER = 60;
/** A client gives a key this long to get a job (D25 frees a dead winner's claim after 30 s). */
const CLIENT_BUDGET_MS = 90_000;

interface Outcome {
  key: string;
  jobId: string;
  tries: number;
  cutOff: number;
  inProgress: number;
}

describe('api-gateway SIGKILL with submits in flight', () => {
  let stack: Stack;
  let redis: RedisClient;

  beforeAll(async () => {
    stack = await startStack({
      schedulers: 2,
      gateways: 2,
      workers: 2,
      workerEnv: { WORKER_ECHO_DELAY: '20ms' },
      schedulerEnv: { SCHEDULER_PENDING_REPLAY_AGE: '5s' },
    });
    redis = redisFor(stack);
  }, 120_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
  });

  it('every Idempotency-Key ends with exactly one job, SUCCEEDED and run once; the cut-off requests are retried on the other gateway', async () => {
    const killed = stack.procs.get('api-gateway-1');
    if (!killed) throw new Error('no api-gateway-1');
    const down = new Set<number>();
    let killedAt = 0;
    let answeredByKilled = 0;

    const submit = async (i: number): Promise<Outcome> => {
      const key = `gwkill-${i}`;
      const body = JSON.stringify({ topic: 'job.echo', prompt: `gwkill ${i}`, labels: { gwkill: String(i) } });
      const out: Outcome = { key, jobId: '', tries: 0, cutOff: 0, inProgress: 0 };
      let g = i % 2;
      const started = Date.now();
      while (Date.now() - started < CLIENT_BUDGET_MS) {
        if (down.has(g)) g = (g + 1) % 2;
        out.tries += 1;
        let status = 0;
        let res: Record<string, unknown> = {};
        try {
          const r = await fetch(`${stack.gatewayUrls[g]}/api/v1/jobs`, {
            method: 'POST',
            headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json', 'Idempotency-Key': key },
            body,
            signal: AbortSignal.timeout(15_000),
          });
          status = r.status;
          res = (await r.json()) as Record<string, unknown>;
        } catch {
          // The connection died with the gateway: the request may or may not have taken effect.
          out.cutOff += 1;
          if (!killed.running) down.add(0);
          g = (g + 1) % 2;
          continue;
        }
        if (status === 200) {
          out.jobId = String(res['job_id']);
          if (g === 0 && killedAt === 0 && ++answeredByKilled === KILL_AFTER) {
            killedAt = Date.now();
            killed.kill('SIGKILL');
          }
          return out;
        }
        if (status === 409 && res['code'] === 'idempotency_in_progress') out.inProgress += 1;
        else if (status !== 503) throw new Error(`${key}: unexpected ${status} ${JSON.stringify(res)}`);
        // The claim's winner is gone or the store is busy: back off as a client would.
        await new Promise((r) => setTimeout(r, 500));
      }
      throw new Error(`${key}: no job after ${CLIENT_BUDGET_MS} ms (${out.tries} tries)`);
    };

    const outcomes = await pool(Array.from({ length: JOBS }, (_, i) => i), 30, submit);
    expect(killedAt).toBeGreaterThan(0);
    await killed.waitExit(5_000);
    const cutOff = outcomes.filter((o) => o.cutOff > 0);
    console.log(`[gateway kill] ${JOBS} keys; ${cutOff.length} had a request cut off by the SIGKILL, ${outcomes.filter((o) => o.inProgress > 0).length} met a dead winner's claim (409), longest ${Math.max(...outcomes.map((o) => o.tries))} tries`);
    // The kill must have cut requests off, or this test proved nothing.
    expect(cutOff.length).toBeGreaterThan(0);

    const ids = outcomes.map((o) => o.jobId);
    const final = await waitTerminal(redis, ids, 90_000, { stack });
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });

    // No key has a second job, not even one that never ran: every record carrying the label.
    const byKey = new Map<string, string[]>();
    for await (const k of scanKeys(redis, 'job:meta:{*}')) {
      const labels = await redis.hget(k, 'labels');
      const n = labels ? (JSON.parse(labels) as Record<string, string>)['gwkill'] : undefined;
      if (n === undefined) continue;
      const id = /^job:meta:\{(.+)\}$/.exec(k)?.[1] ?? k;
      byKey.set(`gwkill-${n}`, [...(byKey.get(`gwkill-${n}`) ?? []), id]);
    }
    const mismatched = outcomes.filter((o) => JSON.stringify(byKey.get(o.key)) !== JSON.stringify([o.jobId]));
    expect(mismatched.map((o) => ({ key: o.key, answered: o.jobId, records: byKey.get(o.key) }))).toEqual([]);
    expect(byKey.size).toBe(JOBS);
  }, 240_000);
});
