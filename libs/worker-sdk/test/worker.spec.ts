import { subjects } from '@cordum/bus';
import { ComponentRole, create, encodePacket, JobCancelSchema, DispatchIdentitySchema, JobStatus, newPacket, WORKER_DRAINING_LABEL } from '@cordum/protocol';
import { Latch, waitFor } from '@cordum/testing';
import { closeRedis, createRedis } from '@cordum/redis';
import { generateKeyPairSync } from 'node:crypto';
import { Registry } from 'prom-client';
import { createWorker, DEFAULT_START_ACK_DELAY_MS, type JobHandler, type Worker, type WorkerOptions } from '../src';
import { captureLog, makeJob, onlyResult, publishJob, startHarness, type Harness } from './harness';

let h: Harness;
const workers: Worker[] = [];
let seq = 0;

beforeAll(async () => {
  h = await startHarness();
});

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
});

afterAll(async () => {
  await h.close();
});

const echo: JobHandler = (job) => Promise.resolve({ status: 'SUCCEEDED', result: { echo: (job.input as { prompt?: string } | null)?.prompt ?? null } });

async function startWorker(over: Partial<WorkerOptions> & { topics: string[] }): Promise<Worker> {
  seq += 1;
  const w = createWorker({
    workerId: `w${seq}-${process.pid}`,
    pool: 'default',
    bus: h.bus,
    redis: h.redis,
    logger: h.logger,
    maxParallelJobs: 16,
    heartbeatIntervalMs: 10_000, // the longest allowed: quiet, for tests that do not look at heartbeats
    handler: echo,
    ...over,
  });
  workers.push(w);
  await w.start();
  return w;
}

const resultOf = (jobId: string) => waitFor(() => onlyResult(h, jobId), 10_000, { message: `result of ${jobId}` });

test('with startAckDelayMs 0 a job gets its start ack before the handler runs, then a SUCCEEDED result with its dispatch, and res:<id> holds the output', async () => {
  let ackSeenByHandler = false;
  const w = await startWorker({
    topics: ['job.ack'],
    startAckDelayMs: 0,
    handler: async (job) => {
      // The RUNNING progress must already be on the bus when the handler starts (D40 start ack).
      ackSeenByHandler = await waitFor(() => h.progress.some((p) => p.jobId === job.request.jobId && p.status === JobStatus.RUNNING), 5_000);
      await new Promise((r) => setTimeout(r, 25)); // simulated work, so execution_ms has something to measure
      return { status: 'SUCCEEDED', result: { echo: (job.input as { prompt: string }).prompt, attempt: job.attempt } };
    },
  });
  const job = await publishJob(h, 'job.ack', { prompt: 'hi there', attempt: 2 });
  const r = await resultOf(job.jobId);
  expect(ackSeenByHandler).toBe(true);
  const ack = h.progress.find((p) => p.jobId === job.jobId)!;
  expect(ack.dispatch?.dispatchId).toBe(job.dispatchId);
  expect(ack.dispatch?.attempt).toBe(2n);
  expect(r.status).toBe(JobStatus.SUCCEEDED);
  expect(r.workerId).toBe(w.workerId);
  expect(r.resultPtr).toBe(`redis://res:${job.jobId}`);
  expect(r.dispatch?.dispatchId).toBe(job.dispatchId);
  expect(r.dispatch?.attempt).toBe(2n);
  expect(r.executionMs).toBeGreaterThanOrEqual(25n);
  expect(JSON.parse((await h.redis.get(`res:${job.jobId}`))!)).toEqual({ echo: 'hi there', attempt: 2 });
  expect(w.stats()).toMatchObject({ executed: 1, succeeded: 1, activeJobs: 0 });
});

test("a request whose context pointer is not its job's own ctx:<id> is FAILED context_pointer_invalid; the handler never sees that key (P298)", async () => {
  let handled = 0;
  await startWorker({ topics: ['job.ptr'], handler: async (job) => (handled++, echo(job)) });
  // another tenant's job, whose input a forged request points at
  const victim = await makeJob(h, 'job.ptr', { prompt: 'secret of another tenant' });
  // P318: and any pointer that is not a redis:// one (read as "no input", the handler ran on null)
  for (const contextPtr of [`redis://ctx:${victim.jobId}`, 'redis://cordum:some:other:key', `ctx:${victim.jobId}`, `REDIS://ctx:${victim.jobId}`, 's3://bucket/input.json', 'redis://']) {
    const job = await publishJob(h, 'job.ptr', { prompt: 'mine', contextPtr });
    const r = await resultOf(job.jobId);
    expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED, code: 'context_pointer_invalid' });
    expect(r.errorMessage).toContain(`is not this job's (redis://ctx:${job.jobId})`);
    expect(await h.redis.get(`res:${job.jobId}`)).toBeNull();
  }
  expect(handled).toBe(0);
});

test('res:<id> is written with a TTL (the default job TTL), so a result the scheduler never applies still expires', async () => {
  await startWorker({ topics: ['job.res-ttl'] });
  const job = await publishJob(h, 'job.res-ttl', { prompt: 'kept a while' });
  expect((await resultOf(job.jobId)).resultPtr).toBe(`redis://res:${job.jobId}`);
  const ttl = await h.redis.pttl(`res:${job.jobId}`);
  expect(ttl).toBeGreaterThan(7 * 24 * 3600_000 - 60_000);
  expect(ttl).toBeLessThanOrEqual(7 * 24 * 3600_000);
});

test('by default a job that runs past the ack delay gets one start ack while it runs; a job that ends sooner sends only its result', async () => {
  expect(DEFAULT_START_ACK_DELAY_MS).toBe(100);
  const latches = new Map([['slow', new Latch()], ['marker', new Latch()]]);
  await startWorker({
    topics: ['job.ack-delay'],
    maxParallelJobs: 64,
    handler: async (job) => {
      await latches.get((job.input as { prompt: string }).prompt)?.wait(10_000);
      return echo(job);
    },
  });
  const slow = await publishJob(h, 'job.ack-delay', { prompt: 'slow' });
  const sentAt = Date.now();
  const ack = await waitFor(() => h.progress.find((p) => p.jobId === slow.jobId), 5_000, { message: 'start ack of the slow job' });
  // Sent by the delay timer while the handler still waits, not at once and not by the job's end.
  expect(Date.now() - sentAt).toBeGreaterThanOrEqual(DEFAULT_START_ACK_DELAY_MS - 20);
  expect(onlyResult(h, slow.jobId)).toBeUndefined();
  expect(ack.status).toBe(JobStatus.RUNNING);
  expect(ack.dispatch?.dispatchId).toBe(slow.dispatchId);
  latches.get('slow')!.open();
  expect((await resultOf(slow.jobId)).status).toBe(JobStatus.SUCCEEDED);

  const fast = await Promise.all(Array.from({ length: 20 }, () => publishJob(h, 'job.ack-delay', { prompt: 'fast' })));
  for (const j of fast) expect((await resultOf(j.jobId)).status).toBe(JobStatus.SUCCEEDED);
  // The marker's ack timer starts after every fast job's and has the same delay, and the worker's
  // publishes reach us in order: once its ack is here, a fast job's uncancelled timer would have been too.
  const marker = await publishJob(h, 'job.ack-delay', { prompt: 'marker' });
  await waitFor(() => h.progress.some((p) => p.jobId === marker.jobId), 5_000, { message: 'start ack of the marker job' });
  latches.get('marker')!.open();
  expect(h.progress.filter((p) => fast.some((j) => j.jobId === p.jobId))).toEqual([]);
  expect(h.progress.filter((p) => p.jobId === slow.jobId)).toHaveLength(1);
  await resultOf(marker.jobId);
});

test('startAckDelayMs outside 0..1000 is refused at construction', () => {
  for (const bad of [-1, 1_001, 1.5]) {
    expect(() => createWorker({ workerId: 'x', pool: 'default', topics: ['job.x'], bus: h.bus, redis: h.redis, logger: h.logger, maxParallelJobs: 1, handler: echo, startAckDelayMs: bad })).toThrow(/startAckDelayMs/);
  }
});

test('two workers in one queue group execute each of 100 jobs exactly once', async () => {
  const runs = new Map<string, number>();
  const perWorker = [0, 0];
  const mk = (i: 0 | 1): JobHandler => (job) => {
    runs.set(job.request.jobId, (runs.get(job.request.jobId) ?? 0) + 1);
    perWorker[i]! += 1;
    return echo(job);
  };
  await startWorker({ topics: ['job.group'], handler: mk(0), maxParallelJobs: 1000 });
  await startWorker({ topics: ['job.group'], handler: mk(1), maxParallelJobs: 1000 });
  const jobs = await Promise.all(Array.from({ length: 100 }, () => makeJob(h, 'job.group')));
  for (const j of jobs) h.bus.publishCore('job.group', j.bytes);
  await h.bus.flush();
  await waitFor(() => jobs.every((j) => onlyResult(h, j.jobId)), 20_000, { message: '100 results' });
  expect(jobs.every((j) => runs.get(j.jobId) === 1)).toBe(true);
  expect(jobs.every((j) => h.results.get(j.jobId)!.length === 1 && onlyResult(h, j.jobId)!.status === JobStatus.SUCCEEDED)).toBe(true);
  expect(perWorker[0]! + perWorker[1]!).toBe(100);
  expect(perWorker[0]).toBeGreaterThan(0); // both members of the group got work
  expect(perWorker[1]).toBeGreaterThan(0);
});

test('the direct subject worker.<id>.jobs reaches that worker; a non subject-safe id gets no direct subject (D44)', async () => {
  const w = await startWorker({ topics: ['job.direct-only'] });
  expect(w.directSubject).toBe(`worker.${w.workerId}.jobs`);
  const job = await publishJob(h, `worker.${w.workerId}.jobs`);
  expect((await resultOf(job.jobId)).workerId).toBe(w.workerId);

  const odd = await startWorker({ topics: ['job.odd'], workerId: 'has.dots' });
  expect(odd.directSubject).toBeNull();
  const hs = await waitFor(() => h.handshakes.find((x) => x.componentId === 'has.dots'));
  expect(hs.readyTopics).toEqual(['job.odd']);
});

test('a redelivered identical dispatch runs once, on the same worker or another one', async () => {
  let runs = 0;
  const handler: JobHandler = (job) => {
    runs += 1;
    return echo(job);
  };
  const a = await startWorker({ topics: ['job.dup'], handler });
  const b = await startWorker({ topics: ['job.dup'], handler });
  const job = await makeJob(h, 'job.dup');
  // The same packet three times: twice on the group (either member), once on a's direct subject.
  h.bus.publishCore('job.dup', job.bytes);
  h.bus.publishCore('job.dup', job.bytes);
  h.bus.publishCore(`worker.${a.workerId}.jobs`, job.bytes);
  await h.bus.flush();
  await resultOf(job.jobId);
  await waitFor(() => a.stats().duplicates + b.stats().duplicates === 2, 5_000, { message: 'two duplicates seen' });
  expect(runs).toBe(1);
  await h.resultsDrained();
  expect(h.results.get(job.jobId)).toHaveLength(1);
});

test('a dispatch that is not the job current one, an older attempt, or a terminal job never runs (D1)', async () => {
  let runs = 0;
  const w = await startWorker({ topics: ['job.fence'], handler: (job) => ((runs += 1), echo(job)) });
  // The job record (job-store layout) names dispatch d-new: d-old is fenced off.
  const jobId = `job-fence-${process.pid}`;
  await h.redis.hset(`job:meta:{${jobId}}`, { id: JSON.stringify(jobId), state: 'DISPATCHED', dispatch: JSON.stringify({ dispatchId: 'd-new', attempt: 2, published: true, subject: 'job.fence' }) });
  await publishJob(h, 'job.fence', { jobId, dispatchId: 'd-old', attempt: 1 });
  await waitFor(() => w.stats().stale === 1);
  const current = await publishJob(h, 'job.fence', { jobId, dispatchId: 'd-new', attempt: 2 });
  await resultOf(current.jobId);
  expect(runs).toBe(1);
  // Without a job record the claim still orders attempts: attempt 1 after attempt 3 is stale.
  const other = `job-order-${process.pid}`;
  await publishJob(h, 'job.fence', { jobId: other, dispatchId: 'a3', attempt: 3 });
  await resultOf(other);
  await publishJob(h, 'job.fence', { jobId: other, dispatchId: 'a1', attempt: 1 });
  await waitFor(() => w.stats().stale === 2);
  // A job already CANCELLED in the store is not started.
  const cancelled = `job-term-${process.pid}`;
  await h.redis.hset(`job:meta:{${cancelled}}`, { id: JSON.stringify(cancelled), state: 'CANCELLED' });
  await publishJob(h, 'job.fence', { jobId: cancelled, attempt: 1 });
  await waitFor(() => w.stats().stale === 3);
  expect(runs).toBe(2);
  await h.resultsDrained();
  expect(h.results.get(cancelled)).toBeUndefined();
  // A job between attempts (RETRYING) still names its ended dispatch, which a worker answered
  // without claiming (worker_busy, say): a late copy of that dispatch must not run beside the
  // next attempt. Only a DISPATCHED or RUNNING record has a dispatch out.
  const between = `job-between-${process.pid}`;
  await h.redis.hset(`job:meta:{${between}}`, { id: JSON.stringify(between), state: 'RETRYING', dispatch: JSON.stringify({ dispatchId: 'd-ended', attempt: 1, published: true, subject: 'job.fence' }) });
  await publishJob(h, 'job.fence', { jobId: between, dispatchId: 'd-ended', attempt: 1 });
  await waitFor(() => w.stats().stale === 4);
  expect(runs).toBe(2);
});

test('a JobCancel aborts the running job and the worker reports CANCELLED', async () => {
  const started = new Latch();
  const w = await startWorker({
    topics: ['job.cancel'],
    handler: (job) => {
      started.open();
      return new Promise((_, reject) => job.signal.addEventListener('abort', () => reject(new Error('aborted'))));
    },
  });
  const job = await publishJob(h, 'job.cancel');
  await started.wait();
  // A cancel for another dispatch of the same job is ignored.
  const stale = create(JobCancelSchema, { jobId: job.jobId, reason: 'old', dispatch: create(DispatchIdentitySchema, { dispatchId: 'other' }) });
  h.bus.publishCore(subjects.cancel, encodePacket(newPacket('gw', { case: 'jobCancel', value: stale })));
  const cancel = create(JobCancelSchema, { jobId: job.jobId, reason: 'user asked', requestedBy: 'tester' });
  await h.bus.publish(subjects.cancel, encodePacket(newPacket('gw', { case: 'jobCancel', value: cancel })), { msgId: `sys.job.cancel:${job.jobId}:x` });
  const r = await resultOf(job.jobId);
  expect(r.status).toBe(JobStatus.CANCELLED);
  expect(r.dispatch?.dispatchId).toBe(job.dispatchId);
  expect(w.stats()).toMatchObject({ cancelled: 1, activeJobs: 0 });
});

test('a JobCancel that comes while the dispatch claim is on its way to Redis stops the job before its handler runs (P242)', async () => {
  // Without P242 the cancel found no running job and was dropped: the handler ran and the job
  // waited for the scheduler's resend (P135, about 10 s later; none comes here).
  const admin = createRedis({ url: h.redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  const log = captureLog('info');
  let runs = 0;
  const w = await startWorker({
    topics: ['job.claim-cancel'],
    logger: log.logger,
    handler: () => {
      runs += 1;
      return Promise.resolve({ status: 'SUCCEEDED', result: 'ran' });
    },
  });
  const job = await makeJob(h, 'job.claim-cancel');
  // Writes wait while Redis is paused: the worker's claim script is held there.
  await admin.call('CLIENT', 'PAUSE', '10000', 'WRITE');
  try {
    h.bus.publishCore('job.claim-cancel', job.bytes);
    await h.bus.flush();
    await waitFor(async () => /flags=b .*cmd=evalsha?\b/.test(String(await admin.call('CLIENT', 'LIST'))), 5_000, { message: 'the claim waits in Redis' });
    const cancel = create(JobCancelSchema, { jobId: job.jobId, reason: 'user asked', dispatch: create(DispatchIdentitySchema, { dispatchId: job.dispatchId }) });
    h.bus.publishCore(subjects.cancel, encodePacket(newPacket('gw', { case: 'jobCancel', value: cancel })));
    await waitFor(() => log.lines.some((l) => l.msg === 'job cancel received' && l.job_id === job.jobId), 5_000, { message: 'the cancel reached the worker' });
  } finally {
    await admin.call('CLIENT', 'UNPAUSE');
    await closeRedis(admin);
  }
  const r = await resultOf(job.jobId);
  expect(r.status).toBe(JobStatus.CANCELLED);
  expect(r.dispatch?.dispatchId).toBe(job.dispatchId);
  expect(runs).toBe(0);
  expect(w.stats()).toMatchObject({ executed: 0, cancelled: 1, activeJobs: 0 });
  // The claim was written: a redelivery of this dispatch does not run it either.
  h.bus.publishCore('job.claim-cancel', job.bytes);
  await h.bus.flush();
  await waitFor(() => w.stats().duplicates === 1, 5_000, { message: 'the redelivery was seen as a duplicate' });
  expect(runs).toBe(0);
});

/** h.redis with every read of a ctx: key held until `release()` (a slow node holding the job inputs). */
function slowInputs(): { redis: typeof h.redis; release: () => void } {
  let release = (): void => undefined;
  const held = new Promise<void>((r) => (release = r));
  const redis = new Proxy(h.redis, {
    get(target, prop) {
      if (prop === 'get') return async (key: string) => { if (key.startsWith('ctx:')) await held; return target.get(key); };
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { redis, release };
}

test('a JobCancel that comes after the claim while the input is still being read: the handler never starts (P266)', async () => {
  const log = captureLog('info');
  const slow = slowInputs();
  let runs = 0;
  const w = await startWorker({
    topics: ['job.input-cancel'], redis: slow.redis, logger: log.logger,
    handler: () => { runs += 1; return Promise.resolve({ status: 'SUCCEEDED', result: 'ran' }); },
  });
  const job = await makeJob(h, 'job.input-cancel');
  try {
    h.bus.publishCore('job.input-cancel', job.bytes);
    await h.bus.flush();
    await waitFor(async () => (await h.redis.exists(`worker:claim:{${job.jobId}}`)) === 1, 5_000, { message: 'the dispatch claimed' });
    const cancel = create(JobCancelSchema, { jobId: job.jobId, reason: 'user asked', dispatch: create(DispatchIdentitySchema, { dispatchId: job.dispatchId }) });
    h.bus.publishCore(subjects.cancel, encodePacket(newPacket('gw', { case: 'jobCancel', value: cancel })));
    await waitFor(() => log.lines.some((l) => l.msg === 'job cancel received' && l.job_id === job.jobId), 5_000, { message: 'the cancel reached the worker' });
  } finally {
    slow.release();
  }
  expect((await resultOf(job.jobId)).status).toBe(JobStatus.CANCELLED);
  expect(runs).toBe(0);
  expect(w.stats()).toMatchObject({ executed: 0, cancelled: 1, activeJobs: 0 });
});

test('a job stop() hands back at its deadline while its input is still being read is not started after (P266)', async () => {
  const slow = slowInputs();
  let runs = 0;
  const w = await startWorker({
    topics: ['job.input-stop'], redis: slow.redis, stopTimeoutMs: 300,
    handler: () => { runs += 1; return Promise.resolve({ status: 'SUCCEEDED', result: 'ran' }); },
  });
  const job = await makeJob(h, 'job.input-stop');
  h.bus.publishCore('job.input-stop', job.bytes);
  await h.bus.flush();
  await waitFor(async () => (await h.redis.exists(`worker:claim:{${job.jobId}}`)) === 1, 5_000, { message: 'the dispatch claimed' });
  await w.stop();
  expect(await resultOf(job.jobId)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_shutdown' });
  slow.release();
  // The handler would start in the turn after the input resolves; a few turns later it has not.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  expect(runs).toBe(0);
  expect(w.stats()).toMatchObject({ executed: 0 });
});

// P319: also with a stopTimeoutMs shorter than the window (its last wait ended at the window's end).
test.each([[undefined], [0]])('stop() (stopTimeoutMs %s) resolves only after a dispatch of its late window whose claim Redis held past the window has been refused (P266)', async (stopTimeoutMs) => {
  const admin = createRedis({ url: h.redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  const w = await startWorker({ topics: ['job.stop-claim'], handler: () => Promise.resolve({ status: 'SUCCEEDED' }), ...(stopTimeoutMs !== undefined ? { stopTimeoutMs } : {}) });
  const job = await makeJob(h, 'job.stop-claim');
  let handedBackAtStop: number | undefined;
  const beatsBefore = h.heartbeats.length;
  try {
    const stopping = w.stop().then(() => void (handedBackAtStop = w.stats().handedBack));
    // The job comes once stop() has begun its wait with nothing in flight (its draining heartbeat
    // is out), inside the 0.5 s window; writes wait 1 s, so its claim outlasts the window and stays
    // inside the client's 1.5 s command timeout.
    await waitFor(() => h.heartbeats.slice(beatsBefore).some((b) => b.workerId === w.workerId && b.labels[WORKER_DRAINING_LABEL] === 'true'), 5_000, { intervalMs: 5, message: 'draining heartbeat' });
    await admin.call('CLIENT', 'PAUSE', '1000', 'WRITE');
    h.bus.publishCore('job.stop-claim', job.bytes);
    await h.bus.flush();
    await waitFor(async () => /flags=b .*cmd=evalsha?\b/.test(String(await admin.call('CLIENT', 'LIST'))), 5_000, { message: 'the claim waits in Redis' });
    await stopping;
  } finally {
    await admin.call('CLIENT', 'UNPAUSE');
    await closeRedis(admin);
  }
  // Before P266 stop() resolved at the window's end, the claim still in Redis and nothing answered.
  expect(handedBackAtStop).toBe(1);
  expect(await resultOf(job.jobId)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_busy' });
});

test('a cancel a verifying worker refuses is counted and logged once per reason, not dropped without a word (P220)', async () => {
  const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const log = captureLog('info');
  const w = await startWorker({ topics: ['job.verify-cancel'], verifyKey: keys.publicKey, logger: log.logger });
  const unsigned = () => encodePacket(newPacket('gw-without-key', { case: 'jobCancel', value: create(JobCancelSchema, { jobId: 'any', reason: 'x' }) }));
  for (let i = 0; i < 3; i++) h.bus.publishCore(subjects.cancel, unsigned());
  await waitFor(() => w.stats().badPackets === 3, 5_000, { message: 'three refused cancels counted' });
  const dropped = log.lines.filter((l) => l.msg === 'dropping a job cancel this worker cannot decode or verify');
  expect(dropped).toHaveLength(1);
  expect(JSON.stringify(dropped[0])).toMatch(/sign/);
});

test('heartbeats of one worker have strictly increasing created_at, even two sent in one millisecond (P243)', async () => {
  // A verifying scheduler ignores a heartbeat not newer than the worker's last one (a replay).
  // With the clock held still, start()'s heartbeat and stop()'s draining one share a millisecond.
  const frozen = Date.now();
  // Only Date is faked (Date.now and new Date, which the packet's created_at reads); timers run.
  jest.useFakeTimers({ now: frozen, doNotFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'nextTick', 'queueMicrotask', 'hrtime', 'performance'] });
  try {
    const w = await startWorker({ topics: ['job.beat-order'] });
    await w.stop();
    await h.bus.flush();
    await waitFor(() => h.heartbeats.filter((b) => b.workerId === w.workerId).length >= 2, 5_000, { message: 'start and stop heartbeats' });
    const sent = h.heartbeatsSentAt.filter((_, i) => h.heartbeats[i]?.workerId === w.workerId);
    expect(sent[0]).toBe(frozen);
    for (let i = 1; i < sent.length; i++) expect(sent[i]).toBeGreaterThan(sent[i - 1]!);
  } finally {
    jest.useRealTimers();
  }
});

test('handshake and heartbeats carry the contract fields; running jobs get a progress every heartbeat', async () => {
  const release = new Latch();
  const w = await startWorker({
    topics: ['job.hb', 'job.hb2'],
    heartbeatIntervalMs: 100,
    maxParallelJobs: 7,
    labels: { zone: 'a' },
    handler: async (job) => {
      job.progress({ percent: 40, message: 'step 2/5' });
      await release.promise;
      return echo(job);
    },
  });
  const hs = await waitFor(() => h.handshakes.find((x) => x.componentId === w.workerId));
  // Repeated with every heartbeat, so a scheduler that starts later learns it within one interval.
  await waitFor(() => h.handshakes.filter((x) => x.componentId === w.workerId).length >= 3, 2_000, { message: 'a handshake with each heartbeat' });
  expect(hs.role).toBe(ComponentRole.WORKER);
  expect(hs.supportedVersions).toEqual([1]);
  expect(hs.capabilities).toEqual({ start_ack: true, cancel: true, progress: true });
  expect(hs.readyTopics).toEqual(['job.hb', 'job.hb2', `worker.${w.workerId}.jobs`]);
  expect(hs.sdkVersion).toMatch(/worker-sdk/);
  const job = await publishJob(h, 'job.hb');
  const busy = await waitFor(() => h.heartbeats.find((b) => b.workerId === w.workerId && b.activeJobs === 1));
  expect(busy).toMatchObject({ pool: 'default', maxParallelJobs: 7, labels: { zone: 'a' }, capabilities: ['job.hb', 'job.hb2'] });
  expect(busy.cpuLoad).toBeGreaterThanOrEqual(0);
  expect(busy.cpuLoad).toBeLessThanOrEqual(100);
  expect(busy.memoryLoad).toBeGreaterThan(0);
  await waitFor(() => h.progress.filter((p) => p.jobId === job.jobId && p.dispatch?.dispatchId === job.dispatchId).length >= 4, 5_000, { message: 'repeated progress' });
  // The keep-alive repeats the handler's latest progress; it never falls back to 0 % and no message.
  const seen = h.progress.filter((p) => p.jobId === job.jobId);
  const fromHandler = seen.findIndex((p) => p.percent === 40);
  expect(fromHandler).toBeGreaterThanOrEqual(0);
  expect(seen.slice(fromHandler).map((p) => [p.percent, p.message])).toEqual(seen.slice(fromHandler).map(() => [40, 'step 2/5']));
  release.open();
  await resultOf(job.jobId);
  await waitFor(() => h.heartbeats.some((b) => b.workerId === w.workerId && b.activeJobs === 0 && h.heartbeats.indexOf(b) > h.heartbeats.indexOf(busy)));
});

test('beyond maxParallelJobs a job is refused with FAILED_RETRYABLE worker_busy, never dropped', async () => {
  const release = new Latch();
  const w = await startWorker({ topics: ['job.busy'], maxParallelJobs: 1, handler: async (job) => (await release.promise, echo(job)) });
  const first = await publishJob(h, 'job.busy');
  await waitFor(() => w.stats().activeJobs === 1);
  const second = await publishJob(h, 'job.busy');
  const refused = await resultOf(second.jobId);
  expect(refused.status).toBe(JobStatus.FAILED_RETRYABLE);
  expect(refused.errorCode).toBe('worker_busy');
  expect(refused.dispatch?.dispatchId).toBe(second.dispatchId);
  release.open();
  expect((await resultOf(first.jobId)).status).toBe(JobStatus.SUCCEEDED);
});

describe('a result write that Redis refuses (maxmemory 1: every write is OOM)', () => {
  afterEach(async () => {
    await h.redis.config('SET', 'maxmemory', '0');
  });

  /** A worker whose handler waits for `go`; the test makes Redis refuse writes while it runs. */
  const refusing = async (over: Partial<WorkerOptions> = {}) => {
    const go = new Latch();
    let runs = 0;
    const topic = `job.oom${seq}`;
    const w = await startWorker({
      topics: [topic],
      ...over,
      handler: async (job) => {
        runs += 1;
        await go.promise;
        return echo(job);
      },
    });
    const job = await publishJob(h, topic, { prompt: 'kept' });
    await waitFor(() => runs === 1, 5_000, { message: 'handler running' });
    await h.redis.config('SET', 'maxmemory', '1');
    go.open();
    return { w, job, runs: () => runs };
  };

  test('is retried until Redis takes it: one SUCCEEDED result, the handler run once, never a retryable failure', async () => {
    const ooms = async (): Promise<number> => Number(/errorstat_OOM:count=(\d+)/.exec(await h.redis.info('errorstats'))?.[1] ?? 0);
    const before = await ooms();
    const { job, runs } = await refusing();
    await waitFor(async () => (await ooms()) >= before + 2, 5_000, { message: 'the write refused twice' });
    expect(onlyResult(h, job.jobId)).toBeUndefined();
    await h.redis.config('SET', 'maxmemory', '0');
    const r = await resultOf(job.jobId);
    expect({ status: r.status, resultPtr: r.resultPtr }).toEqual({ status: JobStatus.SUCCEEDED, resultPtr: `redis://res:${job.jobId}` });
    expect(JSON.parse((await h.redis.get(`res:${job.jobId}`))!)).toEqual({ echo: 'kept' });
    await h.resultsDrained();
    expect(h.results.get(job.jobId)).toHaveLength(1);
    expect(runs()).toBe(1);
  });

  test('a write begun inside resultWriteBudgetMs that fails after it (Redis stalled mid-write) gets one more try: SUCCEEDED, run once', async () => {
    // Commands time out after 1 s; the budget is 1.5 s. The handler freezes Redis for 2.5 s as it
    // returns: the first write times out at 1 s, the second, begun at ~1.1 s (inside the budget),
    // times out at ~2.1 s (after it) and gets one more try, which Redis answers once it wakes.
    // (A stall of the worker's own event loop no longer fails a write whose reply came meanwhile:
    // @cordum/redis stall.spec.)
    const slow = createRedis({ url: h.redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, commandTimeoutMs: 1_000 });
    const log = captureLog();
    let thawAt: Promise<void> | undefined;
    try {
      let runs = 0;
      const topic = `job.stall${seq}`;
      await startWorker({
        topics: [topic],
        redis: slow,
        logger: log.logger,
        resultWriteBudgetMs: 1_500,
        handler: async (job) => {
          runs += 1;
          await h.redisServer.process.freeze();
          thawAt = new Promise((r) => setTimeout(r, 2_500)).then(() => h.redisServer.process.thaw());
          return echo(job);
        },
      });
      const job = await publishJob(h, topic, { prompt: 'kept' });
      const r = await resultOf(job.jobId);
      expect({ status: r.status, code: r.errorCode, resultPtr: r.resultPtr }).toEqual({ status: JobStatus.SUCCEEDED, code: '', resultPtr: `redis://res:${job.jobId}` });
      expect(JSON.parse((await h.redis.get(`res:${job.jobId}`))!)).toEqual({ echo: 'kept' });
      expect(runs).toBe(1);
      expect(log.lines.find((l) => l.msg === 'result written after retries')).toMatchObject({ tries: 3 });
    } finally {
      await thawAt;
      h.redisServer.process.thaw();
      await Promise.all(workers.splice(0).map((w) => w.stop()));
      await closeRedis(slow);
    }
  });

  test('a stop deadline during the retries makes the next try the last: FAILED result_write_failed, never FAILED_RETRYABLE, and stop() does not wait out the budget (P137)', async () => {
    const ooms = async (): Promise<number> => Number(/errorstat_OOM:count=(\d+)/.exec(await h.redis.info('errorstats'))?.[1] ?? 0);
    const before = await ooms();
    const { w, job, runs } = await refusing({ stopTimeoutMs: 300 }); // resultWriteBudgetMs: its 30 s default
    await waitFor(async () => (await ooms()) >= before + 1, 5_000, { message: 'the write refused' });
    await w.stop();
    const r = await resultOf(job.jobId);
    expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED, code: 'result_write_failed' });
    await h.resultsDrained();
    expect(h.results.get(job.jobId)).toHaveLength(1);
    expect(runs()).toBe(1);
    expect(w.stats()).toMatchObject({ handedBack: 0, failed: 1, retryable: 0 });
  });

  test('past resultWriteBudgetMs the job is FAILED result_write_failed, not FAILED_RETRYABLE: it ran, and a new attempt would run it twice', async () => {
    const { job, runs } = await refusing({ resultWriteBudgetMs: 300 });
    const r = await resultOf(job.jobId);
    expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED, code: 'result_write_failed' });
    expect(r.errorMessage).toMatch(/OOM/);
    expect(runs()).toBe(1);
  });

  test("a stop deadline while a settled job's result write is in flight lets that write and its result go on: SUCCEEDED, stored, one result, run once (P137)", async () => {
    // The handler freezes Redis as it returns, so the result's SET waits in flight; the stop
    // deadline (300 ms) passes meanwhile, and Redis wakes only after it. Before P137 the job was
    // answered FAILED_RETRYABLE worker_shutdown at the deadline (a second run elsewhere) and the
    // stored result was dropped.
    const slow = createRedis({ url: h.redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1, commandTimeoutMs: 5_000 });
    const log = captureLog();
    const frozen = new Latch();
    try {
      let runs = 0;
      const topic = `job.stopwrite${seq}`;
      const w = await startWorker({
        topics: [topic],
        redis: slow,
        logger: log.logger,
        stopTimeoutMs: 300,
        handler: async (job) => {
          runs += 1;
          await h.redisServer.process.freeze();
          frozen.open();
          return echo(job);
        },
      });
      const job = await publishJob(h, topic, { prompt: 'kept' });
      await frozen.wait();
      const stopping = w.stop();
      const deadline = await waitFor(() => log.lines.find((l) => l.msg === 'stop deadline reached, abandoning running jobs'), 5_000, { message: 'the stop deadline' });
      expect(deadline).toMatchObject({ jobs: [], answering: [job.jobId] });
      h.redisServer.process.thaw();
      await stopping;
      const r = await resultOf(job.jobId);
      expect({ status: r.status, code: r.errorCode, resultPtr: r.resultPtr }).toEqual({ status: JobStatus.SUCCEEDED, code: '', resultPtr: `redis://res:${job.jobId}` });
      expect(JSON.parse((await h.redis.get(`res:${job.jobId}`))!)).toEqual({ echo: 'kept' });
      await h.resultsDrained();
      expect(h.results.get(job.jobId)).toHaveLength(1);
      expect(runs).toBe(1);
      expect(w.stats()).toMatchObject({ handedBack: 0, succeeded: 1 });
    } finally {
      h.redisServer.process.thaw();
      await Promise.all(workers.splice(0).map((x) => x.stop()));
      await closeRedis(slow);
    }
  });
});

test('bad packets are dropped and counted; missing ctx gives input null; a throwing handler reports FAILED', async () => {
  const inputs: unknown[] = [];
  const w = await startWorker({
    topics: ['job.misc'],
    handler: (job) => {
      inputs.push(job.input);
      if (job.input !== null) throw Object.assign(new Error('boom'), { code: 'my_code' });
      return Promise.resolve({ status: 'FAILED', errorCode: 'nope', errorMessage: 'no input' });
    },
  });
  h.bus.publishCore('job.misc', new Uint8Array([0xff, 0xff, 0xff]));
  await waitFor(() => w.stats().badPackets === 1);
  const noCtx = await publishJob(h, 'job.misc', { withCtx: false });
  const r1 = await resultOf(noCtx.jobId);
  expect(r1).toMatchObject({ status: JobStatus.FAILED, errorCode: 'nope', errorMessage: 'no input', resultPtr: '' });
  const throws = await publishJob(h, 'job.misc');
  const r2 = await resultOf(throws.jobId);
  expect(r2).toMatchObject({ status: JobStatus.FAILED, errorCode: 'my_code', errorMessage: 'boom' });
  expect(inputs[0]).toBeNull();
});

test('stop() waits for an in-flight job, publishes its result, and is idempotent', async () => {
  const started = new Latch();
  const release = new Latch();
  const registry = new Registry();
  const w = await startWorker({ topics: ['job.stop'], registry, handler: async (job) => (started.open(), await release.promise, echo(job)) });
  const job = await publishJob(h, 'job.stop');
  await started.wait();
  let stopped = false;
  const p1 = w.stop().then(() => (stopped = true));
  const p2 = w.stop();
  // A full bus round trip later, stop() still has not resolved: the job is in flight.
  await h.bus.flush();
  expect(w.stats().activeJobs).toBe(1);
  expect(stopped).toBe(false);
  release.open();
  await Promise.all([p1, p2]);
  // stop() resolved after the result's PubAck: JetStream holds it, so the observer's consumer gets it (its
  // delivery is asynchronous, hence the wait), and the worker ran nothing after stop.
  expect((await resultOf(job.jobId)).status).toBe(JobStatus.SUCCEEDED);
  expect(w.stats().activeJobs).toBe(0);
  await w.stop();
  await expect(w.start()).rejects.toMatchObject({ code: 'worker_state' });
  expect(await registry.getSingleMetricAsString('cordum_worker_jobs_total')).toMatch(/status="SUCCEEDED"} 1/);
});

test('two workers sharing a registry add up in cordum_worker_active_jobs, and it returns to 0 (P218)', async () => {
  const registry = new Registry();
  const started = new Latch<void>();
  const both = { n: 0 };
  const release = new Latch();
  const handler: JobHandler = async (job) => {
    if (++both.n === 2) started.open();
    await release.promise;
    return echo(job);
  };
  await startWorker({ topics: ['job.gauge-a'], registry, handler });
  await startWorker({ topics: ['job.gauge-b'], registry, handler });
  const a = await publishJob(h, 'job.gauge-a');
  const b = await publishJob(h, 'job.gauge-b');
  await started.wait();
  const gauge = async () => (await registry.getSingleMetric('cordum_worker_active_jobs')!.get()).values[0]?.value;
  expect(await gauge()).toBe(2);
  release.open();
  await resultOf(a.jobId);
  await resultOf(b.jobId);
  await waitFor(async () => (await gauge()) === 0, 5_000);
});

test('start() on a worker whose runtime was closed throws worker_state at once instead of waiting for Redis (P218)', async () => {
  const closed = createRedis({ url: h.redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  await closeRedis(closed);
  const w = createWorker({ workerId: `closed-${process.pid}`, pool: 'default', topics: ['job.closed'], bus: h.bus, redis: closed, logger: h.logger, maxParallelJobs: 1, handler: echo });
  await expect(w.start()).rejects.toMatchObject({ name: 'WorkerError', code: 'worker_state', message: expect.stringContaining('runtime was closed') });
  await w.stop();
});

test('stop() bounds its wait: a job that ignores the signal is answered FAILED_RETRYABLE worker_shutdown', async () => {
  const started = new Latch();
  const never = new Latch();
  const w = await startWorker({ topics: ['job.stuck'], stopTimeoutMs: 300, handler: async () => (started.open(), await never.promise, { status: 'SUCCEEDED' }) });
  const job = await publishJob(h, 'job.stuck');
  await started.wait();
  await w.stop();
  const r = await resultOf(job.jobId);
  expect(r).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_shutdown' });
  never.open();
});

test('a job abandoned at stop that finishes later writes no result: res:<id> belongs to the attempt that replaces it', async () => {
  const started = new Latch();
  const late = new Latch();
  const w = await startWorker({ topics: ['job.late'], stopTimeoutMs: 300, handler: async () => (started.open(), await late.promise, { status: 'SUCCEEDED', result: { from: 'the abandoned attempt' } }) });
  const job = await publishJob(h, 'job.late');
  await started.wait();
  const beatsBefore = h.heartbeats.filter((b) => b.workerId === w.workerId).length;
  await w.stop();
  expect(await resultOf(job.jobId)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_shutdown' });
  // Its intake closed, its last heartbeat says it is draining (sent before the drain, so a
  // scheduler never routes the job it redispatches back here).
  const last = await waitFor(() => h.heartbeats.filter((b) => b.workerId === w.workerId).slice(beatsBefore).find((b) => b.labels[WORKER_DRAINING_LABEL] === 'true'), 5_000, { message: 'draining heartbeat' });
  expect(last.activeJobs).toBe(1);
  // The next attempt (another worker) has written its result meanwhile.
  await h.redis.set(`res:${job.jobId}`, JSON.stringify({ from: 'the next attempt' }));
  late.open(); // the abandoned handler returns its result after all
  await waitFor(() => w.stats().activeJobs === 0, 5_000, { message: 'the abandoned run ended' });
  expect(JSON.parse((await h.redis.get(`res:${job.jobId}`)) ?? 'null')).toEqual({ from: 'the next attempt' });
  await h.resultsDrained();
  expect(h.results.get(job.jobId)).toHaveLength(1);
});
