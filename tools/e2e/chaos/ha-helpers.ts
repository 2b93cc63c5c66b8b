// Helpers for the HA / chaos end-to-end tests: bulk submit across gateways,
// job state read straight from Redis (CONTRACT §5 `job:meta:{<id>}`; reading
// 1,000 jobs through HTTP each poll would load the 2-core CI box more than the
// system under test), and Prometheus counters scraped from the schedulers; and,
// for a job that does not finish, a report of everything the stack knows about
// it (stuckJobReport).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AckPolicy, connect, DeliverPolicy, nanos } from 'nats';
import { decodePacket } from '@cordum/protocol';
import { closeRedis, createRedis, scanKeys, type RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { api, API_KEY, dispatchesRunTwice as runTwice, pool, readExecRecords, readyz, type ExecRecord, type Stack } from '../test/stack';

export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'DENIED']);

export function redisFor(stack: Stack): RedisClient {
  return createRedis({ url: stack.redis.url, clusterAddresses: stack.redisClusterAddresses, poolSize: 1, minIdleConns: 1 });
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

/**
 * Submits one job with an Idempotency-Key the way a careful client does while a dependency
 * fails over: a timeout, a 503 (D11: not accepted, key released) or a 409 in-progress is retried
 * with the same key on the next gateway after 250 ms, for up to `budgetMs`. Any other answer
 * throws. Resolves with the job id and how many attempts were retried.
 */
export async function submitKeyed(
  stack: Stack,
  i: number,
  o: { key: string; body: Record<string, unknown>; budgetMs: number; onRetry?: (status: number, code: unknown) => void },
): Promise<{ jobId: string; retried: number }> {
  const started = Date.now();
  let retried = 0;
  for (let g = i % stack.gatewayUrls.length; Date.now() - started < o.budgetMs; g = (g + 1) % stack.gatewayUrls.length) {
    let status = 0;
    let body: Record<string, unknown> = {};
    try {
      const r = await fetch(`${stack.gatewayUrls[g]}/api/v1/jobs`, {
        method: 'POST',
        headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json', 'Idempotency-Key': o.key },
        body: JSON.stringify(o.body),
        signal: AbortSignal.timeout(15_000),
      });
      status = r.status;
      body = (await r.json()) as Record<string, unknown>;
    } catch {
      status = 0; // no answer: the request may or may not have taken effect; the key makes a retry safe
    }
    if (status === 200) return { jobId: String(body['job_id']), retried };
    if (status !== 0 && status !== 503 && !(status === 409 && body['code'] === 'idempotency_in_progress')) throw new Error(`${o.key}: unexpected ${status} ${JSON.stringify(body)}`);
    retried += 1;
    o.onRetry?.(status, body['code']);
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${o.key}: no job within ${o.budgetMs} ms`);
}

/**
 * Writes the chaos suites' reconciler timeouts into `dir` and returns the file's path (for
 * TIMEOUT_CONFIG_PATH): dispatch 8 s and a 1 s scan, so what a fault leaves behind is repaired
 * within a test; running `runningS` (40 s), above the 30 s AckWait after which JetStream
 * redelivers a result a killed replica had fetched (the scheduler warns below that bound).
 */
export function shortTimeoutsFile(dir: string, runningS = 40): string {
  const path = join(dir, 'timeouts.yaml');
  writeFileSync(path, `reconciler:\n  dispatch_timeout_seconds: 8\n  running_timeout_seconds: ${runningS}\n  scan_interval_seconds: 1\n`);
  return path;
}

/** The workers in the scheduler's snapshot (`sys:workers:snapshot`); none while there is none. */
export async function snapshotWorkers(redis: RedisClient): Promise<{ worker_id: string; last_heartbeat: number }[]> {
  return (JSON.parse((await redis.get('sys:workers:snapshot')) ?? '{"workers":[]}') as { workers: { worker_id: string; last_heartbeat: number }[] }).workers;
}

/**
 * Polls every process's /readyz until each has answered other than 200 at least once (a
 * dependency is gone: BEHAVIOURS §8, readiness reflects it); a timeout names those still ready.
 */
export async function waitAllSeenUnready(stack: Stack, timeoutMs: number): Promise<void> {
  const seenDown = new Set<string>();
  await waitFor(async () => {
    await Promise.all([...stack.healthPorts].map(async ([name, port]) => {
      if (!(await readyz(port))) seenDown.add(name);
    }));
    const up = [...stack.healthPorts.keys()].filter((n) => !seenDown.has(n));
    if (up.length > 0) throw new Error(`still ready: ${up.join(', ')}`);
    return true;
  }, timeoutMs, { message: 'every service unready', intervalMs: 100 });
}

/**
 * `o.jobs` keyed submits over every gateway, 20 at a time, retried with the same key on 503 or no
 * answer; `o.fault` starts after `o.faultAfter` answers, while the rest keep arriving. Then: every
 * key one job, SUCCEEDED and run once (the workers' exec logs); no job outside `o.everyId` (every
 * job the test file submitted; these ids are added to it) ran at all, so no job whose submit was
 * answered 503 ran, even where its submit reached the stream; every service ready again, none
 * exited. A failure keeps the stack's logs and prints what the exec logs and the store say of
 * the odd jobs. Returns a line for the test log.
 */
export async function keyedLoadWithFault(
  stack: Stack,
  redis: RedisClient,
  o: { prefix: string; jobs: number; faultAfter: number; budgetMs: number; everyId: Set<string>; fault: () => Promise<string> },
): Promise<string> {
  let answered = 0;
  let retried = 0;
  const outage: { done?: Promise<string> } = {};
  const submit = async (i: number): Promise<string> => {
    const out = await submitKeyed(stack, i, { key: `${o.prefix}-${i}`, body: { topic: 'job.echo', prompt: `${o.prefix} ${i}` }, budgetMs: o.budgetMs });
    retried += out.retried;
    if (++answered === o.faultAfter) {
      outage.done = o.fault();
      outage.done.catch(() => undefined); // awaited, and its error thrown, after the submits
    }
    return out.jobId;
  };
  const ids = await pool(Array.from({ length: o.jobs }, (_, i) => i), 20, submit);
  if (!outage.done) throw new Error('the fault never started');
  const what = await outage.done;
  const endedAt = Date.now();
  expect(new Set(ids).size).toBe(o.jobs);
  for (const id of ids) o.everyId.add(id);

  const final = await waitTerminal(redis, ids, 120_000, { stack }).catch((err: unknown) => {
    stack.keep(`${o.prefix}: jobs not terminal`);
    throw err;
  });
  const notSucceeded = [...final.entries()].filter(([, s]) => s !== 'SUCCEEDED');
  const audit = executionAudit(stack, ids);
  if (notSucceeded.length + audit.twice.length + audit.never.length > 0) {
    const odd = [...notSucceeded.map(([id]) => id), ...audit.twice, ...audit.never].slice(0, 5);
    stack.keep(`${o.prefix}: jobs not SUCCEEDED once`);
    console.error(`[${o.prefix}] jobs not SUCCEEDED once: ${JSON.stringify({ notSucceeded: notSucceeded.length, audit, runs: execRecords(stack, odd), jobs: await describeJobs(redis, odd) })}`);
  }
  expect(notSucceeded).toEqual([]);
  expect(audit).toEqual({ twice: [], never: [] });
  // Records the clients were never given (a submit answered 503 whose record stayed): the pending
  // replayer takes such an orphan only after its replay age, so "it never ran" is read once each
  // of them is terminal, not the moment the answered jobs are.
  const others: string[] = [];
  for await (const key of scanKeys(redis, 'job:meta:{*}')) {
    const id = key.slice('job:meta:{'.length, -1);
    if (!o.everyId.has(id)) others.push(id);
  }
  await waitTerminal(redis, others, 60_000, { stack });
  expect([...stack.executions().keys()].filter((id) => !o.everyId.has(id))).toEqual([]);
  const doneMs = Date.now() - endedAt;
  await waitAllReady(stack, 20_000);
  expect([...stack.procs].filter(([, p]) => !p.running).map(([name]) => name)).toEqual([]);
  return `${what}; ${retried} submit retries; all ${o.jobs} done ${doneMs} ms after the fault ended`;
}

/**
 * One keyed job through the stack, awaited SUCCEEDED, its id added to `everyId`. A scheduler that
 * starts cold parks jobs until the workers' next heartbeat (up to 5 s), and a fault test wants
 * its fault to meet a stack that is dispatching.
 */
export async function warmUp(stack: Stack, redis: RedisClient, key: string, everyId: Set<string>): Promise<void> {
  const warm = await submitKeyed(stack, 0, { key, body: { topic: 'job.echo', prompt: 'warm up' }, budgetMs: 10_000 });
  everyId.add(warm.jobId);
  expect((await waitTerminal(redis, [warm.jobId], 20_000)).get(warm.jobId)).toBe('SUCCEEDED');
}

/**
 * SIGKILLs the stack's one redis-server or nats-server, waits until every service has answered
 * /readyz with 503 (BEHAVIOURS §8: readiness reflects it), keeps it down `downMs` more while
 * the load goes on (the outage itself), and starts it again on the same port and data dir.
 * Returns a line for the test log.
 */
export async function killAndRestart(stack: Stack, kind: 'redis' | 'nats', downMs: number): Promise<string> {
  const killedAt = Date.now();
  stack[kind].process.kill('SIGKILL');
  await stack[kind].process.waitExit(5_000);
  await waitAllSeenUnready(stack, 15_000);
  const unreadyMs = Date.now() - killedAt;
  await new Promise((r) => setTimeout(r, downMs));
  await stack.restartNode(kind);
  return `every service unready ${unreadyMs} ms after the kill; down ${Date.now() - killedAt} ms`;
}

type ConfigReplica = { service: string; instance_id: string; status: string; revision: number };

/** The replicas' config reports from GET /api/v1/config/status, read through gateway `via`. */
export async function configReplicas(via: Pick<Stack, 'gatewayUrl'>): Promise<ConfigReplica[]> {
  return ((await api(via, 'GET', '/api/v1/config/status')).body['replicas'] ?? []) as ConfigReplica[];
}

/**
 * PUTs a config merge patch through gateway `o.put` (expects 204) and waits until both
 * schedulers, read through gateway `o.read`, are IN_SYNC at the revision the PUT answered (its
 * ETag) or later; a timeout names the replicas last read. Returns that revision.
 */
export async function putConfigConverged(o: { put: Pick<Stack, 'gatewayUrl'>; read: Pick<Stack, 'gatewayUrl'>; patch: Record<string, unknown> }): Promise<number> {
  const put = await api(o.put, 'PUT', '/api/v1/config', o.patch);
  expect(put.status).toBe(204);
  const rev = Number(JSON.parse(put.headers.get('etag') ?? '"-1"'));
  let replicas: ConfigReplica[] = [];
  await waitFor(async () => {
    replicas = await configReplicas(o.read);
    const schedulers = replicas.filter((r) => r.service === 'scheduler');
    return schedulers.length === 2 && schedulers.every((r) => r.status === 'IN_SYNC' && r.revision >= rev);
  }, 15_000, { message: 'both schedulers IN_SYNC at the new revision' }).catch((e: unknown) => {
    throw new Error(`${String(e)}; revision ${rev}; replicas ${JSON.stringify(replicas)}`);
  });
  return rev;
}

/** Waits until every process of the stack answers /readyz with 200; a timeout names one that did not. */
export async function waitAllReady(stack: Stack, timeoutMs: number): Promise<void> {
  await waitFor(async () => {
    for (const [name, port] of stack.healthPorts) if (!(await readyz(port))) throw new Error(`${name} not ready`);
    return true;
  }, timeoutMs, { message: 'every service ready' });
}

/**
 * Polls until every job is terminal; returns the final states. With `diag`, a timeout
 * error carries stuckJobReport() of the first job still pending (which watches it for
 * `lateWatchMs` more: leave the test that much time).
 */
export async function waitTerminal(redis: RedisClient, ids: string[], timeoutMs: number, diag?: { stack: Stack; lateWatchMs?: number }): Promise<Map<string, string | null>> {
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
    const msg = `${pending.length} of ${ids.length} jobs not terminal after ${timeoutMs} ms (e.g. ${last})`;
    const first = pending[0];
    throw new Error(diag && first ? `${msg}\n${await stuckJobReport(diag.stack, redis, first, diag.lateWatchMs)}` : msg);
  }
  return final;
}

const STREAM = 'CORDUM_SYS';
const SCHEDULER_DURABLES = ['dur_cordum-scheduler__sys_job_submit', 'dur_cordum-scheduler__sys_job_result', 'dur_cordum-scheduler__sys_job_cancel'];

/** The job's packets in CORDUM_SYS (submits and results since it was created): seq, time, msg id, what they say. */
async function streamTrail(natsUrls: string[], id: string, sinceMs: number): Promise<string[]> {
  const nc = await connect({ servers: natsUrls, name: 'e2e-diagnose' });
  const out: string[] = [];
  try {
    const jsm = await nc.jetstreamManager();
    const jsmQuick = await nc.jetstreamManager({ timeout: 2_000 });
    for (const durable of SCHEDULER_DURABLES) {
      try {
        const ci = await jsm.consumers.info(STREAM, durable);
        out.push(`consumer ${durable}: delivered stream_seq ${ci.delivered.stream_seq}, ack_floor stream_seq ${ci.ack_floor.stream_seq}, ack_pending ${ci.num_ack_pending}, redelivered ${ci.num_redelivered}, waiting pulls ${ci.num_waiting}, pending ${ci.num_pending}`);
      } catch (err) {
        out.push(`consumer ${durable}: ${String(err)}`);
      }
    }
    for (const subject of ['sys.job.submit', 'sys.job.result']) {
      // A plain ephemeral consumer, not nats.js's ordered one: for a while after a node's loss
      // a consumer create can time out (seen on nats-server 2.9.10, cause not traced), and the
      // ordered consumer retries it for minutes (30 tries, up to 30 s apart), which made a
      // stuck-job report outlast jest's timeout. Here: three tries of 2 s.
      const config = {
        filter_subject: subject,
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(sinceMs - 1_000).toISOString(),
        ack_policy: AckPolicy.None,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: nanos(30_000),
      };
      const ci = await jsmQuick.consumers.add(STREAM, config).catch(() => jsmQuick.consumers.add(STREAM, config)).catch(() => jsmQuick.consumers.add(STREAM, config));
      const oc = await nc.jetstream().consumers.get(STREAM, ci.name);
      const msgs = await oc.fetch({ max_messages: 5_000, expires: 2_000 });
      for await (const m of msgs) {
        try {
          const p = decodePacket(m.data);
          const v = p.payload.value as { jobId?: string; status?: number; workerId?: string; dispatch?: { dispatchId?: string; attempt?: bigint } } | undefined;
          if (v?.jobId === id) {
            out.push(`${subject} seq ${m.seq} at ${new Date(Math.floor(m.info.timestampNanos / 1e6)).toISOString()} msg-id ${m.headers?.get('Nats-Msg-Id') ?? '-'} ${p.payload.case}${v.status !== undefined ? ` status ${v.status}` : ''}${v.workerId ? ` worker ${v.workerId}` : ''}${v.dispatch ? ` dispatch ${v.dispatch.dispatchId}/${v.dispatch.attempt}` : ''}`);
          }
        } catch {
          // not a packet of ours
        }
        if (m.info.pending === 0) break;
      }
      await jsm.consumers.delete(STREAM, ci.name).catch(() => undefined); // else gone 30 s after its last use
    }
  } finally {
    await nc.close();
  }
  return out;
}

/**
 * Everything the stack knows about a job that did not finish: its record, worker claim and
 * lock, the JetStream trail (scheduler consumers, its submit/result packets), the exec logs,
 * the lines mentioning it in every process's output, and what happened to it in the next
 * `lateWatchMs` (e.g. 35 s: a result redelivered after AckWait, 30 s, D8, shows up as a
 * late SUCCEEDED). Written to `<tmp>/stuck-<id>.txt` as well, and the stack's tmp is kept.
 */
export async function stuckJobReport(stack: Stack, redis: RedisClient, id: string, lateWatchMs = 0): Promise<string> {
  const at = Date.now();
  const section = (title: string, lines: string[]): string => `-- ${title}\n${lines.length ? lines.map((l) => `  ${l.slice(0, 600)}`).join('\n') : '  (none)'}`;
  const guard = async (fn: () => Promise<string[]>): Promise<string[]> => fn().catch((err: unknown) => [`failed: ${String(err)}`]);
  const record = await jobFields(redis, id).catch(() => ({}) as Record<string, unknown>);
  const dump = async (key: string): Promise<string> => {
    const type = await redis.type(key);
    const value = type === 'hash' ? JSON.stringify(await redis.hgetall(key)) : type === 'string' ? await redis.get(key) : type;
    return `${key} = ${value} (pttl ${await redis.pttl(key)} ms)`;
  };
  const keys = await guard(async () => Promise.all([`worker:claim:{${id}}`, lockKey(id), fenceKey(id)].map(dump)));
  const createdAt = typeof record['createdAt'] === 'number' ? record['createdAt'] : at - 120_000;
  const trail = await guard(() => streamTrail(stack.natsUrls, id, createdAt));
  const execs = stack.execLogs.flatMap((f) => (existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter((l) => l.includes(id)).map((l) => `${f.split('/').pop()}: ${l}`) : []));
  let late = `still ${String(record['state'])} ${lateWatchMs} ms later`;
  const lateWatch = await waitFor(async () => {
    const st = (await states(redis, [id])).get(id);
    return st && TERMINAL.has(st) ? st : undefined;
  }, lateWatchMs, { intervalMs: 250 }).catch(() => undefined);
  if (lateWatch) late = `${lateWatch} ${Date.now() - at} ms after the wait gave up: ${JSON.stringify(await describeJobs(redis, [id]))}`;
  const trailLater = lateWatchMs > 0 ? await guard(() => streamTrail(stack.natsUrls, id, createdAt)) : [];
  const lines = stack.grepLogs(id); // after the watch: includes how it ended
  const report = [
    `stuck job ${id} (report taken ${new Date(at).toISOString()})`,
    section('record job:meta', Object.entries(record).map(([k, v]) => `${k}: ${JSON.stringify(v)}`)),
    section('claim and lock', keys),
    section('JetStream', trail),
    section('exec logs', execs),
    section(`process output mentioning it (${lines.length} lines)`, lines.slice(0, 80)),
    section('afterwards', [late]),
    ...(lateWatchMs > 0 ? [section('JetStream afterwards', trailLater)] : []),
    `-- all process logs: ${stack.logDir}`,
  ].join('\n');
  writeFileSync(join(stack.tmp, `stuck-${id}.txt`), `${report}\n`);
  stack.keep(`stuck job ${id}`);
  return report;
}

/**
 * Dispatches (job + dispatch id) the workers ran more than once, per their own logs. A job may
 * legitimately run again under a new attempt after its worker reported FAILED_RETRYABLE (D1 c);
 * one attempt must never run twice.
 */
export function dispatchesRunTwice(stack: Stack, ids: string[]): string[] {
  const want = new Set(ids);
  return runTwice(readExecRecords(stack.execLogs).filter((r) => want.has(r.job_id)));
}

/** The workers' exec log records of the given jobs (which worker ran which dispatch, when). */
export function execRecords(stack: Stack, ids: string[]): ExecRecord[] {
  const want = new Set(ids);
  return readExecRecords(stack.execLogs).filter((r) => want.has(r.job_id));
}

/**
 * A suite's `it` that keeps the stack's process logs (stack.keep) when the test fails, so a
 * chaos failure in CI leaves the logs behind: `const chaos = keptOnFailure(() => stack)`.
 */
export function keptOnFailure(stack: () => Stack | undefined): (name: string, fn: () => Promise<void>, timeoutMs: number) => void {
  return (name, fn, timeoutMs) =>
    it(name, async () => {
      try {
        await fn();
      } catch (err) {
        stack()?.keep(`failed: ${name.slice(0, 80)}`);
        throw err;
      }
    }, timeoutMs);
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
