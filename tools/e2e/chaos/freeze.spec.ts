// A scheduler woken after its Redis commands timed out (issue 3, "SIGSTOP past
// the job-lock TTL, then SIGCONT"), with real processes:
//  - Redis paused (CLIENT PAUSE) under load: every command in flight times out
//    at once ("Command timed out"); no scheduler may die of an unhandled rejection.
//  - SIGSTOP of a scheduler while it holds job locks, longer than the lock TTL;
//    the test itself takes those locks over (as another replica would) and holds
//    them across the SIGCONT: the woken replica must stay alive, and must not write
//    a job record or dispatch a job it lost (fencing, D3/D4).
// Executions are counted from the workers' own logs.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { closeRedis, describeJobs, dispatchesRunTwice, executionAudit, jobFields, locksHeldBy, redisFor, stealLock, submitMany, waitTerminal } from './ha-helpers';
import { readyz, startStack, type Stack } from '../test/stack';

const LOCK_TTL_MS = 3_000;

describe('a scheduler woken after its Redis commands timed out', () => {
  let stack: Stack;
  let redis: RedisClient;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordum-freeze-'));
    const timeouts = join(dir, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 8\n  running_timeout_seconds: 40\n  scan_interval_seconds: 1\n');
    stack = await startStack({
      schedulers: 2,
      gateways: 1,
      workers: 2,
      workerEnv: { WORKER_ECHO_DELAY: '20ms', WORKER_MAX_PARALLEL: '64' },
      schedulerEnv: {
        TIMEOUT_CONFIG_PATH: timeouts,
        SCHEDULER_JOB_LOCK_TTL: `${LOCK_TTL_MS}ms`,
        SCHEDULER_DISPATCH_VERIFY_DELAY: '2s',
        SCHEDULER_PENDING_REPLAY_AGE: '5s',
      },
    });
    redis = redisFor(stack);
  }, 120_000);
  afterAll(async () => {
    console.log(`freeze timings (ms): ${JSON.stringify(timings)}`);
    if (redis) await closeRedis(redis);
    await stack?.stop();
  });

  const proc = (name: string) => {
    const p = stack.procs.get(name);
    if (!p) throw new Error(`no process ${name}`);
    return p;
  };
  const schedulers = () => ['scheduler-1', 'scheduler-2'].map(proc);
  /** What a replica that died of an unhandled rejection leaves in its output. */
  const crashLines = (name: string) => proc(name).output.filter((l) => /Command timed out|unhandled|UnhandledPromiseRejection/i.test(l) && !l.startsWith('{'));

  it('Redis paused under load (every in-flight command times out): both schedulers stay up, every job runs once', async () => {
    const ids = await submitMany(stack, 300, { prefix: 'pause', concurrency: 40 });
    // The schedulers are still working through the burst: pause every client for 2.5 s
    // (commands time out after 1.5 s), including the replies to commands already sent.
    await redis.call('CLIENT', 'PAUSE', '2500', 'ALL');
    const pausedAt = Date.now();
    await waitFor(async () => {
      for (const p of schedulers()) if (!p.running) throw new Error(`${p.name} exited after the pause: ${JSON.stringify(p.exit)} ${p.logs().slice(-3000)}`);
      return (await readyz(stack.healthPorts.get('scheduler-1') ?? 0)) && (await readyz(stack.healthPorts.get('scheduler-2') ?? 0));
    }, 30_000, { message: 'both schedulers ready after the pause', intervalMs: 200 });
    timings['pause_ready_again'] = Date.now() - pausedAt;
    const more = await submitMany(stack, 50, { prefix: 'after-pause', concurrency: 10 });
    const all = [...ids, ...more];
    const final = await waitTerminal(redis, all, 90_000);
    timings['pause_all_terminal'] = Date.now() - pausedAt;
    for (const p of schedulers()) expect({ name: p.name, running: p.running, exit: p.exit, crash: crashLines(p.name) }).toEqual({ name: p.name, running: true, exit: null, crash: [] });
    // Workers lose their Redis too: a result write that timed out after the echo ran is reported
    // FAILED_RETRYABLE and rerun as a new attempt (D1 c). One attempt never runs twice, and a
    // job runs at most once per attempt.
    const audit = executionAudit(stack, all);
    const runs = stack.executions();
    const overRun: unknown[] = [];
    for (const id of audit.twice) {
      const attempts = Number((await jobFields(redis, id))['attempts']);
      if ((runs.get(id) ?? 0) > attempts) overRun.push({ id, runs: runs.get(id), attempts });
    }
    timings['pause_jobs_rerun_after_retryable'] = audit.twice.length;
    const notOk = [...final.entries()].filter(([, s]) => s !== 'SUCCEEDED').map(([id]) => id);
    expect({ dispatchesRunTwice: dispatchesRunTwice(stack, all), overRun, never: audit.never.length, notSucceeded: notOk.length, sample: await describeJobs(redis, [...audit.never, ...notOk]) }).toEqual({
      dispatchesRunTwice: [],
      overRun: [],
      never: 0,
      notSucceeded: 0,
      sample: [],
    });
  }, 150_000);

  it('SIGSTOP past the job-lock TTL while holding locks, locks taken over, SIGCONT: alive, no write or dispatch for a lost job, each job once', async () => {
    const frozen = proc('scheduler-2');
    const ids: string[] = [];
    const stolen = new Map<string, { meta: Record<string, string>; executions: number }>();
    let cycles = 0;
    // Catching the replica while it holds job locks is a matter of timing: a handler holds
    // one for a few ms. Freeze during a burst, and repeat (bounded) until it held some.
    while (stolen.size === 0 && cycles < 5) {
      cycles += 1;
      let stoppedAt = 0;
      let held: { id: string; token: string }[] = [];
      const burst = submitMany(stack, 200, {
        prefix: `freeze${cycles}`,
        concurrency: 40,
        onSubmitted: (n) => {
          if (n === 120 && stoppedAt === 0) {
            stoppedAt = Date.now();
            frozen.kill('SIGSTOP');
          }
        },
      });
      ids.push(...(await burst));
      expect(stoppedAt).toBeGreaterThan(0);
      held = await locksHeldBy(redis, 'scheduler-2');
      // Its locks expire while it is frozen; take them over like another replica would (a fresh
      // fence), and keep them across the wake-up. The fault's duration, not a wait for an outcome:
      await waitFor(() => Date.now() - stoppedAt > LOCK_TTL_MS + 200, 10_000, { intervalMs: 50 });
      for (const h of held) {
        if (!(await stealLock(redis, h.id, 'e2e-thief', 120_000))) continue; // scheduler-1 took it first: a legitimate owner
        const meta = await redis.hgetall(`job:meta:{${h.id}}`);
        stolen.set(h.id, { meta, executions: stack.executions().get(h.id) ?? 0 });
      }
      await waitFor(() => Date.now() - stoppedAt > LOCK_TTL_MS + 2_000, 10_000, { intervalMs: 50 });
      frozen.kill('SIGCONT');
      timings[`freeze_cycle${cycles}_ms`] = Date.now() - stoppedAt;
      timings[`freeze_cycle${cycles}_locks_held`] = held.length;
      // Awake and ready again (it first works through everything the kernel buffered).
      await waitFor(async () => {
        if (!frozen.running) throw new Error(`scheduler-2 exited after SIGCONT: ${JSON.stringify(frozen.exit)} ${frozen.logs().slice(-3000)}`);
        return readyz(stack.healthPorts.get('scheduler-2') ?? 0);
      }, 60_000, { message: 'scheduler-2 ready after SIGCONT', intervalMs: 200 });
    }
    timings['freeze_cycles'] = cycles;
    timings['freeze_locks_taken_over'] = stolen.size;
    expect(stolen.size).toBeGreaterThan(0);
    // Let the woken replica act on what it had in hand for a while (fault window), then compare.
    const wokeAt = Date.now();
    await waitFor(() => Date.now() - wokeAt > 3_000, 10_000, { intervalMs: 100 });
    for (const [id, before] of stolen) {
      const after = { meta: await redis.hgetall(`job:meta:{${id}}`), executions: stack.executions().get(id) ?? 0 };
      expect({ id, ...after }).toEqual({ id, ...before });
    }
    expect(crashLines('scheduler-2')).toEqual([]);
    timings['freeze_lock_lost_log_lines'] = (frozen.logs().match(/job lock lost while handling/g) ?? []).length;
    // Give the jobs back: everything finishes, each exactly once.
    for (const id of stolen.keys()) await redis.del(`cordum:scheduler:job:{${id}}`);
    const final = await waitTerminal(redis, ids, 120_000);
    const audit = executionAudit(stack, ids);
    const notOk = [...final.entries()].filter(([, s]) => s !== 'SUCCEEDED').map(([id]) => id);
    expect({ twice: audit.twice, never: audit.never.length, notSucceeded: notOk.length, sample: await describeJobs(redis, [...audit.never, ...notOk]) }).toEqual({ twice: [], never: 0, notSucceeded: 0, sample: [] });
    for (const p of schedulers()) expect({ name: p.name, running: p.running }).toEqual({ name: p.name, running: true });
  }, 240_000);
});
