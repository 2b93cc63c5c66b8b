// Hosts whose clocks disagree (P241). The reconciler leader's host runs 60 s ahead: it read the
// RUNNING jobs of a scheduler on time as a minute older than they were, past the running
// timeout (40 s here), and timed them out while they ran. A gateway whose host
// runs 30 s behind anchored `deadline_ms` 30 s early, so a 20 s deadline had passed before the
// job was dispatched. Each service now measures its clock against Redis's and takes those
// timestamps in Redis's time. The clocks are shifted by a preload that moves Date.now() and
// `new Date()` (the monotonic clocks stay). Executions are counted in the workers' exec logs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { closeRedis, describeJobs, executionAudit, keptOnFailure, redisFor, shortTimeoutsFile, waitTerminal } from './ha-helpers';
import { api, stackMetric, startStack, type Stack } from '../test/stack';

const SKEW_PRELOAD = `'use strict';
const offset = Number(process.env.CORDUM_TEST_CLOCK_SKEW_MS || 0);
const RealDate = Date;
const realNow = RealDate.now.bind(RealDate);
class SkewedDate extends RealDate {
  constructor(...args) { if (args.length === 0) super(realNow() + offset); else super(...args); }
  static now() { return realNow() + offset; }
}
globalThis.Date = SkewedDate;
`;

/** Each job runs this long: RUNNING through several of the leader's scans (one a second). */
const ECHO_DELAY_MS = 3_000;
/** Submits are spread over a few of the bus's 2 s pull lives (P231), so both schedulers take some. */
const SUBMIT_EVERY_MS = 250;

describe('replicas on hosts whose clocks disagree (P241)', () => {
  let stack: Stack;
  let redis: RedisClient;
  let dir: string | undefined;
  const skewed = (ms: number): Record<string, string> => ({ NODE_OPTIONS: `--require ${join(dir ?? '', 'skew.cjs')}`, CORDUM_TEST_CLOCK_SKEW_MS: String(ms) });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-skew-'));
    writeFileSync(join(dir, 'skew.cjs'), SKEW_PRELOAD);
    stack = await startStack({
      schedulers: 1,
      gateways: 1,
      workers: 1,
      workerEnv: { WORKER_ECHO_DELAY: `${ECHO_DELAY_MS}ms`, WORKER_MAX_PARALLEL: '32' },
      schedulerEnv: { TIMEOUT_CONFIG_PATH: shortTimeoutsFile(dir, 40), ...skewed(60_000) },
      gatewayEnv: skewed(-30_000),
    });
    redis = redisFor(stack);
    // scheduler-1 (a minute ahead) leads the reconciler; scheduler-2 runs on time
    await waitFor(async () => (await redis.get('cordum:reconciler:default'))?.includes('scheduler-1'), 20_000, { message: 'scheduler-1 leads the reconciler' });
    await stack.spawnScheduler(2, skewed(0));
  }, 120_000);

  afterAll(async () => {
    await closeRedis(redis);
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const chaos = keptOnFailure(() => stack);

  chaos('every job succeeds once: none is timed out while it runs by a leader whose clock is ahead, none fails a deadline a late gateway anchored early', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const body: Record<string, unknown> = { prompt: `skew ${i}`, topic: 'job.echo' };
      if (i % 2 === 0) body['deadline_ms'] = 20_000;
      const r = await api(stack, 'POST', '/api/v1/jobs', body);
      expect(r.status).toBe(200);
      ids.push(String(r.body['job_id']));
      await new Promise((resolve) => setTimeout(resolve, SUBMIT_EVERY_MS)); // pacing, not a wait for a condition
    }
    const ended = await waitTerminal(redis, ids, 90_000, { stack });
    const notOk = [...ended].filter(([, st]) => st !== 'SUCCEEDED').map(([id]) => id);
    expect({ notOk: notOk.length, jobs: notOk.length ? await describeJobs(redis, notOk.slice(0, 3)) : [] }).toEqual({ notOk: 0, jobs: [] });
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });
    // the scheduler on time dispatched some, so the leader read its timestamps; the leader stayed
    expect(await stackMetric(stack, 'scheduler-2', 'cordum_scheduler_dispatch_latency_seconds_count')).toBeGreaterThan(0);
    expect(await redis.get('cordum:reconciler:default')).toContain('scheduler-1');
    // each late service found its offset and said so
    expect(stack.grepLogs("this host's clock is off Redis's").map((l) => l.split(':')[0]).sort()).toEqual(['api-gateway-1', 'scheduler-1']);
  }, 150_000);
});
