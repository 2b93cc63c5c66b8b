// BEHAVIOURS §8, "Redis down": the stack's one redis-server gets SIGKILL and comes back on the
// same port with nothing in it, as a Redis without persistence does after a crash or a restart.
// Two gateways, two schedulers, two echo workers. Every service's /readyz must turn 503 while
// Redis is gone and 200 again after, without a restart of any service; the empty store must then
// serve as a fresh install would: the config rebuilt from the bootstrap files (before any
// replica applies the empty document), the job path, config changes, the worker list. Jobs that were in Redis are gone with it: that is the price of running
// Redis without persistence (docs/operations.md), not something the services can undo.
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { api, pool, startStack, type Stack } from '../test/stack';
import { closeRedis, configReplicas, executionAudit, putConfigConverged, redisFor, submitKeyed, waitAllReady, waitAllSeenUnready, waitTerminal, warmUp } from './ha-helpers';

const JOBS = 100;

describe('the stack\'s one redis-server killed and restarted empty', () => {
  let stack: Stack;
  let redis: RedisClient | undefined;

  beforeAll(async () => {
    // A 1 s config poll, so the replicas read the emptied store within the test (default 30 s).
    const poll = { CORDUM_CONFIG_RELOAD_INTERVAL: '1s' };
    stack = await startStack({ gateways: 2, schedulers: 2, workers: 2, workerEnv: { WORKER_ECHO_DELAY: '20ms' }, schedulerEnv: poll, gatewayEnv: poll, kernelEnv: poll });
    redis = redisFor(stack);
    await warmUp(stack, redis, 'redisr-warm-up', new Set());
    await closeRedis(redis);
    redis = undefined;
  }, 180_000);
  afterAll(async () => {
    if (redis) await closeRedis(redis);
    await stack?.stop();
  });

  it('every service unready while Redis is down and ready after; on the empty store the bootstrap config is back, jobs run once each, the worker list returns', async () => {
    const configBefore = (await api(stack, 'GET', '/api/v1/config')).body['data'] as Record<string, unknown>;
    expect(configBefore).toMatchObject({ pools: { topics: { 'job.echo': expect.any(Array) as unknown } } });
    // Killed under load: 100 submits in flight, 10 at a time, the kill after 50 answers. The jobs
    // in flight are lost with the store; what matters is that no service crashes or spins on
    // the bus messages that still name them.
    let answered = 0;
    let killedAt = 0;
    const inFlight = pool(Array.from({ length: 100 }, (_, i) => i), 10, async (i) => {
      const r = await api({ gatewayUrl: stack.gatewayUrls[i % 2] ?? '' }, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: `lost ${i}` });
      if (++answered === 50) {
        killedAt = Date.now();
        stack.redis.process.kill('SIGKILL');
      }
      return r.status;
    });
    const statuses = await inFlight;
    expect(statuses.filter((st) => st !== 200 && st !== 503)).toEqual([]);
    await stack.redis.process.waitExit(5_000);
    await waitAllSeenUnready(stack, 15_000);
    const unreadyMs = Date.now() - killedAt;
    const submitDown = await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'while down' });
    expect({ status: submitDown.status, code: submitDown.body['code'] }).toEqual({ status: 503, code: 'redis_unavailable' });

    await stack.restartNode('redis');
    const restartedAt = Date.now();
    await waitAllReady(stack, 30_000);
    const readyMs = Date.now() - restartedAt;
    redis = redisFor(stack);
    // Both schedulers have read the config since the restart: their applied reports, gone with
    // the store, are back. They found the document without their bootstrap files' merge and
    // merged the files again (pools, timeouts), so their routing never went empty.
    await waitFor(async () => (await configReplicas(stack)).filter((r) => r.service === 'scheduler').length === 2, 10_000, { message: 'both schedulers reported after the restart' });
    const configAfter = (await api(stack, 'GET', '/api/v1/config')).body['data'] as Record<string, unknown>;
    expect({ pools: configAfter['pools'], timeouts: configAfter['timeouts'] }).toEqual({ pools: configBefore['pools'], timeouts: configBefore['timeouts'] });
    // A log line reaches its file through a pipe, a moment after the process wrote it.
    await waitFor(() => stack.grepLogs('config document has lost its bootstrap merge').length > 0, 5_000, { message: 'the lost merge was logged', intervalMs: 50 });
    expect(stack.grepLogs('"msg":"routing updated","topics":[]')).toEqual([]);

    // A config change made now reaches every replica, although the store's revisions began again.
    await putConfigConverged({ put: stack, read: stack, patch: { pools: { topics: { 'job.after-restart': ['default'] } } } });

    const ids = await pool(Array.from({ length: JOBS }, (_, i) => i), 10, async (i) =>
      (await submitKeyed(stack, i, { key: `redisr-${i}`, body: { topic: 'job.echo', prompt: `redisr ${i}` }, budgetMs: 30_000 })).jobId);
    const final = await waitTerminal(redis, ids, 60_000, { stack });
    expect([...final.entries()].filter(([, s]) => s !== 'SUCCEEDED')).toEqual([]);
    expect(executionAudit(stack, ids)).toEqual({ twice: [], never: [] });

    await waitFor(async () => {
      const workers = await api(stack, 'GET', '/api/v1/workers');
      return ((workers.body['items'] as unknown[] | undefined) ?? []).length === 2;
    }, 20_000, { message: 'both workers listed again' });
    expect([...stack.procs].filter(([, p]) => !p.running).map(([name]) => name)).toEqual([]);
    console.log(`[redis restart] every service unready ${unreadyMs} ms after the kill; all ready ${readyMs} ms after the restart; ${JOBS} jobs done`);
  }, 240_000);
});
