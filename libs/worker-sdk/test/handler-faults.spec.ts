// What a badly behaved handler can do to a worker (the bad-handler review): fractional progress,
// a handler that never settles after its cancel, results JSON cannot carry or Redis should not,
// huge errors, invalid outcomes, non-Error throws. Real nats-server and redis-server.
import { subjects } from '@cordum/bus';
import { create, encodePacket, JobCancelSchema, JobStatus, newPacket } from '@cordum/protocol';
import { Latch, waitFor } from '@cordum/testing';
import { Registry } from 'prom-client';
import { createWorker, DEFAULT_MAX_RESULT_BYTES, type JobHandler, type Worker, type WorkerOptions } from '../src';
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

const capture = () => captureLog();

async function startWorker(over: Partial<WorkerOptions> & { handler: JobHandler }): Promise<{ w: Worker; topic: string }> {
  seq += 1;
  const topic = over.topics?.[0] ?? `job.faults${seq}`;
  const w = createWorker({
    workerId: `wf${seq}-${process.pid}`,
    pool: 'default',
    topics: [topic],
    bus: h.bus,
    redis: h.redis,
    logger: h.logger,
    maxParallelJobs: 16,
    heartbeatIntervalMs: 10_000,
    ...over,
  });
  workers.push(w);
  await w.start();
  return { w, topic };
}

const resultOf = (jobId: string, ms = 10_000) => waitFor(() => onlyResult(h, jobId), ms, { message: `result of ${jobId}` });

async function cancel(jobId: string): Promise<void> {
  const c = create(JobCancelSchema, { jobId, reason: 'test cancel', requestedBy: 'tester' });
  h.bus.publishCore(subjects.cancel, encodePacket(newPacket('gw', { case: 'jobCancel', value: c })));
  await h.bus.flush();
}

describe('progress', () => {
  test('a fractional percent is sent rounded, never throws into the handler, and the heartbeat keep-alive that repeats it does not crash the worker', async () => {
    const thrown: unknown[] = [];
    const release = new Latch();
    const { topic } = await startWorker({
      heartbeatIntervalMs: 100,
      handler: async (job) => {
        try {
          job.progress({ percent: 100 / 3, message: 'a third' });
        } catch (err) {
          thrown.push(err);
        }
        await release.promise;
        return { status: 'SUCCEEDED', result: 'done' };
      },
    });
    const job = await publishJob(h, topic);
    // Several heartbeats re-send the stored progress from the timer (the crash was there).
    await waitFor(() => h.progress.filter((p) => p.jobId === job.jobId).length >= 4, 5_000, { message: 'keep-alive progress' });
    release.open();
    expect((await resultOf(job.jobId)).status).toBe(JobStatus.SUCCEEDED);
    expect(thrown).toEqual([]);
    const sent = h.progress.filter((p) => p.jobId === job.jobId && p.message === 'a third');
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(sent.every((p) => p.percent === 33)).toBe(true);
  });

  test('percent is an integer 0-100: rounded, clamped, NaN and junk 0; a huge message is cut', async () => {
    const cases: [unknown, number][] = [[99.6, 100], [150, 100], [-5, 0], [Number.NaN, 0], [Infinity, 100], ['42', 42], [{}, 0], [Symbol('x'), 0], [2.5, 3]];
    const { topic } = await startWorker({
      startAckDelayMs: 0,
      handler: async (job) => {
        // One packet a PROGRESS_MIN_INTERVAL_MS (P337): each case waits until its own went out.
        for (const [i, [percent]] of cases.entries()) {
          job.progress({ percent: percent as number, message: `case ${i}` });
          await waitFor(() => h.progress.some((p) => p.jobId === job.request.jobId && p.message === `case ${i}`), 5_000, { message: `case ${i} sent` });
        }
        job.progress({ message: 'm'.repeat(100_000) });
        await waitFor(() => h.progress.some((p) => p.jobId === job.request.jobId && p.message.startsWith('mmm')), 5_000, { message: 'the long message sent' });
        return { status: 'SUCCEEDED' };
      },
    });
    const job = await publishJob(h, topic);
    await resultOf(job.jobId);
    await waitFor(() => h.progress.some((p) => p.jobId === job.jobId && p.message.startsWith('mmm')), 5_000, { message: 'the long message' });
    for (const [i, [, want]] of cases.entries()) {
      const p = h.progress.find((x) => x.jobId === job.jobId && x.message === `case ${i}`);
      expect([i, p?.percent]).toEqual([i, want]);
    }
    const long = h.progress.find((p) => p.jobId === job.jobId && p.message.startsWith('mmm'))!;
    expect(long.message).toHaveLength(4_096);
    expect(long.message.endsWith('…')).toBe(true);
  });
});

describe('progress() at any rate (P337)', () => {
  test('10,000 calls in a tight loop send a handful of packets, the last value among them', async () => {
    let jobId = '';
    const { topic } = await startWorker({
      startAckDelayMs: 0,
      handler: async (job) => {
        jobId = job.request.jobId;
        for (let i = 0; i <= 10_000; i++) job.progress({ percent: Math.floor(i / 100), message: `item ${i}` });
        // The value the interval held back goes out when it ends.
        await waitFor(() => h.progress.some((p) => p.jobId === job.request.jobId && p.message === 'item 10000'), 5_000, { message: 'the last progress sent' });
        return { status: 'SUCCEEDED' };
      },
    });
    const job = await publishJob(h, topic);
    expect((await resultOf(job.jobId)).status).toBe(JobStatus.SUCCEEDED);
    const sent = h.progress.filter((p) => p.jobId === jobId);
    // Before: 10,001 packets (one per call), each a scheduler write and a fan-out on every gateway.
    expect(sent.length).toBeLessThanOrEqual(5);
    expect(sent.at(-1)).toMatchObject({ percent: 100, message: 'item 10000' });
  });
});

describe('a handler whose abort listener throws or rejects (P337)', () => {
  test('its cancel is answered CANCELLED, the failure is logged, and the worker runs its next job', async () => {
    const unexpected: unknown[] = [];
    const onError = (e: unknown): void => void unexpected.push(e);
    process.on('uncaughtException', onError);
    process.on('unhandledRejection', onError);
    try {
      const log = capture();
      const { topic } = await startWorker({
        logger: log.logger,
        cancelGraceMs: 5_000,
        handler: (job) =>
          new Promise((resolve) => {
            if (!job.request.jobId.startsWith('bad-listener-')) return resolve({ status: 'SUCCEEDED', result: 'next' });
            job.signal.addEventListener('abort', () => {
              throw new Error('cleanup threw');
            });
            job.signal.addEventListener('abort', async () => {
              await Promise.resolve();
              throw new Error('async cleanup rejected');
            });
            job.signal.onabort = () => {
              throw new Error('onabort threw');
            };
            job.signal.addEventListener('abort', () => resolve({ status: 'FAILED', errorCode: 'stopped' }));
          }),
      });
      const bad = await publishJob(h, topic, { jobId: `bad-listener-${process.pid}` });
      await waitFor(() => h.progress.some((p) => p.jobId === bad.jobId), 5_000, { message: 'the job running' });
      await cancel(bad.jobId);
      expect((await resultOf(bad.jobId)).status).toBe(JobStatus.CANCELLED);
      await waitFor(() => log.lines.filter((l) => l.msg === 'handler abort listener failed').length === 3, 5_000, { message: 'three listener failures logged' });
      const next = await publishJob(h, topic);
      expect((await resultOf(next.jobId)).status).toBe(JobStatus.SUCCEEDED);
      // Before: an uncaught exception and an unhandled rejection (runService stops the worker on either).
      expect(unexpected).toEqual([]);
    } finally {
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    }
  });
});

describe('a handler that never settles after its cancel', () => {
  test('sends no progress once cancelled, neither its own nor the heartbeat keep-alive (they would make the schedulers send the cancel again, P127)', async () => {
    const aborted = new Latch();
    let done = false;
    const { w, topic } = await startWorker({
      heartbeatIntervalMs: 100,
      cancelGraceMs: 30_000,
      handler: async (job) => {
        job.signal.addEventListener('abort', () => aborted.open());
        // Reports per item and ignores its signal, until the test lets it end.
        for (let i = 0; !done; i++) {
          job.progress({ percent: i % 100, message: job.signal.aborted ? 'after the cancel' : 'before the cancel' });
          await new Promise((r) => setTimeout(r, 10));
        }
        return { status: 'SUCCEEDED' };
      },
    });
    const job = await publishJob(h, topic);
    try {
      await waitFor(() => h.progress.some((p) => p.jobId === job.jobId), 5_000, { message: 'progress before the cancel' });
      await cancel(job.jobId);
      await aborted.wait();
      // The worker's publishes arrive in order: once a heartbeat sent after the cancel is in,
      // everything it sent before is too.
      const beatsAfter = async (n: number): Promise<void> => {
        const at = h.heartbeats.length;
        await waitFor(() => h.heartbeats.slice(at).filter((b) => b.workerId === w.workerId).length >= n, 5_000, { message: `${n} heartbeats` });
      };
      await beatsAfter(1);
      const sent = h.progress.filter((p) => p.jobId === job.jobId).length;
      await beatsAfter(3);
      expect(h.progress.filter((p) => p.jobId === job.jobId)).toHaveLength(sent);
      expect(h.progress.filter((p) => p.jobId === job.jobId && p.message === 'after the cancel')).toEqual([]);
      expect(w.stats().activeJobs).toBe(1); // within its grace: only the reports stopped
    } finally {
      done = true;
    }
    expect((await resultOf(job.jobId)).status).toBe(JobStatus.CANCELLED);
  });

  test('a job cancelled within its start-ack delay sends no start ack when the delay ends (P127)', async () => {
    const started = new Latch();
    const aborted = new Latch();
    let abortedAt = 0;
    let done = false;
    const { w, topic } = await startWorker({
      heartbeatIntervalMs: 100,
      cancelGraceMs: 30_000,
      startAckDelayMs: 500,
      handler: async (job) => {
        job.signal.addEventListener('abort', () => {
          abortedAt = Date.now();
          aborted.open();
        });
        started.open();
        while (!done) await new Promise((r) => setTimeout(r, 10)); // ignores its signal
        return { status: 'SUCCEEDED' };
      },
    });
    const job = await publishJob(h, topic);
    try {
      await started.wait();
      await cancel(job.jobId);
      await aborted.wait();
      // Ten heartbeats at 100 ms outlast the 500 ms delay; the worker's publishes arrive in order.
      const at = h.heartbeats.length;
      await waitFor(() => h.heartbeats.slice(at).filter((b) => b.workerId === w.workerId).length >= 10, 5_000, { message: '10 heartbeats' });
      // A heartbeat's keep-alive before the cancel arrived is a start ack too (legitimately, on a
      // slow machine); nothing may be sent once the worker heard the cancel (the abort is
      // signalled as it is heard).
      const after = h.progress.filter((p, i) => p.jobId === job.jobId && h.progressSentAt[i]! > abortedAt);
      expect(after).toEqual([]);
    } finally {
      done = true;
    }
    expect((await resultOf(job.jobId)).status).toBe(JobStatus.CANCELLED);
  });

  test('gives its slot back after cancelGraceMs: answered CANCELLED, logged, counted, no longer reported, and its late outcome ignored; the dispatch never runs again', async () => {
    const { logger, lines } = capture();
    const registry = new Registry();
    const started = new Latch();
    const late = new Latch();
    let runs = 0;
    const { w, topic } = await startWorker({
      logger,
      registry,
      maxParallelJobs: 1,
      heartbeatIntervalMs: 100,
      cancelGraceMs: 300,
      handler: async (job) => {
        runs += 1;
        if ((job.input as { prompt: string }).prompt === 'stuck') {
          started.open();
          await late.promise; // ignores its signal
          job.progress({ percent: 99, message: 'from the stuck handler' });
          return { status: 'SUCCEEDED', result: { from: 'the stuck handler' } };
        }
        return { status: 'SUCCEEDED', result: { ok: true } };
      },
    });
    const stuck = await publishJob(h, topic, { prompt: 'stuck' });
    await started.wait();
    const cancelledAt = Date.now();
    await cancel(stuck.jobId);
    const r = await resultOf(stuck.jobId);
    expect(r.status).toBe(JobStatus.CANCELLED);
    expect(Date.now() - cancelledAt).toBeGreaterThanOrEqual(250);
    expect(w.stats()).toMatchObject({ activeJobs: 0, stuckReleased: 1, cancelled: 1 });
    expect(await registry.getSingleMetricAsString('cordum_worker_stuck_handlers_total')).toMatch(/cordum_worker_stuck_handlers_total 1/);
    const line = lines.find((l) => l.msg === 'handler did not settle after its cancel; slot taken back');
    expect(line).toMatchObject({ level: 'error', job_id: stuck.jobId, dispatch_id: stuck.dispatchId, cancel_grace_ms: 300 });

    // Heartbeats stop counting it and its keep-alive progress stops.
    const hbAt = h.heartbeats.length;
    await waitFor(() => h.heartbeats.slice(hbAt).some((b) => b.workerId === w.workerId), 5_000);
    expect(h.heartbeats.slice(hbAt).filter((b) => b.workerId === w.workerId).every((b) => b.activeJobs === 0)).toBe(true);
    const progressAt = h.progress.filter((p) => p.jobId === stuck.jobId).length;

    // With maxParallelJobs 1 the next job runs (it was refused worker_busy, or never routed).
    const next = await publishJob(h, topic, { prompt: 'next' });
    expect(await resultOf(next.jobId)).toMatchObject({ status: JobStatus.SUCCEEDED });

    // The same dispatch again, here and on another worker: the claim says it ran.
    const other = await startWorker({ topics: [topic], handler: () => ((runs += 100), Promise.resolve({ status: 'SUCCEEDED' })) });
    h.bus.publishCore(topic, (await makeJob(h, topic, { jobId: stuck.jobId, dispatchId: stuck.dispatchId })).bytes);
    h.bus.publishCore(`worker.${other.w.workerId}.jobs`, (await makeJob(h, topic, { jobId: stuck.jobId, dispatchId: stuck.dispatchId })).bytes);
    await h.bus.flush();
    await waitFor(() => w.stats().duplicates + other.w.stats().duplicates >= 2, 5_000, { message: 'both redeliveries seen as duplicates' });

    // The stuck handler settles at last: nothing is written, published, sent or released twice.
    late.open();
    await new Promise((r) => setTimeout(r, 300));
    await h.resultsDrained();
    expect(h.results.get(stuck.jobId)).toHaveLength(1);
    expect(await h.redis.get(`res:${stuck.jobId}`)).toBeNull();
    expect(h.progress.filter((p) => p.jobId === stuck.jobId)).toHaveLength(progressAt);
    expect(w.stats()).toMatchObject({ activeJobs: 0, stuckReleased: 1, succeeded: 1, cancelled: 1 });
    expect(runs).toBe(2);
  });

  test('abandoned at stop, it is taken back after the grace too (activeJobs 0), with no second answer', async () => {
    const started = new Latch();
    const never = new Latch();
    // The grace outlasts stop() (which keeps the job subjects open 0.5 s after its last heartbeat, P233).
    const { w, topic } = await startWorker({ stopTimeoutMs: 100, cancelGraceMs: 2_000, handler: async () => (started.open(), await never.promise, { status: 'SUCCEEDED' }) });
    const job = await publishJob(h, topic);
    await started.wait();
    await w.stop();
    expect(await resultOf(job.jobId)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_shutdown' });
    expect(w.stats().activeJobs).toBe(1);
    await waitFor(() => w.stats().activeJobs === 0, 5_000, { message: 'slot taken back' });
    expect(w.stats()).toMatchObject({ stuckReleased: 1, handedBack: 1, retryable: 1 });
    await h.resultsDrained();
    expect(h.results.get(job.jobId)).toHaveLength(1);
    never.open();
  });

  test('a handler that honours its signal is answered CANCELLED at once, not after the grace', async () => {
    const started = new Latch();
    const { w, topic } = await startWorker({
      cancelGraceMs: 60_000,
      handler: (job) => (started.open(), new Promise((_, reject) => job.signal.addEventListener('abort', () => reject(new Error('aborted'))))),
    });
    const job = await publishJob(h, topic);
    await started.wait();
    await cancel(job.jobId);
    expect((await resultOf(job.jobId, 5_000)).status).toBe(JobStatus.CANCELLED);
    expect(w.stats()).toMatchObject({ stuckReleased: 0, cancelled: 1 });
  });
});

describe('results', () => {
  // P337: JSON.stringify throws RangeError('Invalid string length') past V8's longest string.
  test('a result whose JSON is longer than a string can be is FAILED result_too_large, not result_not_serialisable', async () => {
    const huge = { toJSON: () => { throw new RangeError('Invalid string length'); } };
    const { topic } = await startWorker({ handler: () => Promise.resolve({ status: 'SUCCEEDED', result: huge }) });
    const job = await publishJob(h, topic);
    const r = await resultOf(job.jobId, 3_000);
    expect({ status: r.status, code: r.errorCode, ptr: r.resultPtr }).toEqual({ status: JobStatus.FAILED, code: 'result_too_large', ptr: '' });
    expect(r.errorMessage).toMatch(/longer than a JavaScript string can hold/);
  });

  test.each([
    ['a BigInt', { tokens: 10n }, /BigInt/],
    ['a cycle', (() => { const o: Record<string, unknown> = { a: 1 }; o.self = o; return o; })(), /circular/i],
    ['a function', () => 42, /function/],
    ['a symbol', Symbol('s'), /Symbol/],
  ])('%s is FAILED result_not_serialisable at once, not retried as a Redis error', async (_name, result, why) => {
    const { lines, logger } = capture();
    const { topic } = await startWorker({ logger, handler: () => Promise.resolve({ status: 'SUCCEEDED', result }) });
    const job = await publishJob(h, topic);
    const r = await resultOf(job.jobId, 3_000);
    expect({ status: r.status, code: r.errorCode, ptr: r.resultPtr }).toEqual({ status: JobStatus.FAILED, code: 'result_not_serialisable', ptr: '' });
    expect(r.errorMessage).toMatch(/^the handler's result cannot be stored as JSON: /);
    expect(r.errorMessage).toMatch(why);
    expect(r.errorMessage).not.toContain('\n');
    expect(await h.redis.exists(`res:${job.jobId}`)).toBe(0);
    expect(lines.some((l) => l.msg === 'result write failed, retrying')).toBe(false);
  });

  test('a result over maxResultBytes (UTF-8 bytes, not characters) is FAILED result_too_large; one at the bound is stored', async () => {
    const { topic } = await startWorker({
      maxResultBytes: 1_024,
      handler: (job) => {
        const prompt = (job.input as { prompt: string }).prompt;
        // JSON adds the two quotes: 1022 characters are exactly 1024 bytes.
        const result = prompt === 'fits' ? 'x'.repeat(1_022) : prompt === 'ascii' ? 'x'.repeat(1_023) : 'é'.repeat(600);
        return Promise.resolve({ status: 'SUCCEEDED', result });
      },
    });
    const fits = await publishJob(h, topic, { prompt: 'fits' });
    expect(await resultOf(fits.jobId)).toMatchObject({ status: JobStatus.SUCCEEDED, resultPtr: `redis://res:${fits.jobId}` });
    for (const prompt of ['ascii', 'multibyte']) {
      const job = await publishJob(h, topic, { prompt });
      const r = await resultOf(job.jobId);
      expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED, code: 'result_too_large' });
      expect(r.errorMessage).toMatch(/over maxResultBytes 1024/);
      expect(await h.redis.exists(`res:${job.jobId}`)).toBe(0);
    }
  });

  test("a failure's result that cannot be stored keeps the handler's status and reason: a retry request stays retryable (P317)", async () => {
    const { topic } = await startWorker({
      maxResultBytes: 1_024,
      handler: (job) => {
        const prompt = (job.input as { prompt: string }).prompt;
        const result = prompt === 'big' ? 'x'.repeat(2_000) : { n: 1n };
        return Promise.resolve({ status: 'FAILED_RETRYABLE', errorCode: 'upstream_busy', errorMessage: 'try later', result });
      },
    });
    for (const prompt of ['big', 'bigint']) {
      const job = await publishJob(h, topic, { prompt });
      const r = await resultOf(job.jobId);
      expect({ prompt, status: r.status, code: r.errorCode, message: r.errorMessage, ptr: r.resultPtr }).toEqual({ prompt, status: JobStatus.FAILED_RETRYABLE, code: 'upstream_busy', message: 'try later', ptr: '' });
      expect(await h.redis.exists(`res:${job.jobId}`)).toBe(0);
    }
  });

  test(`the default maxResultBytes is 8 MiB (${DEFAULT_MAX_RESULT_BYTES})`, async () => {
    expect(DEFAULT_MAX_RESULT_BYTES).toBe(8 * 1024 * 1024);
    const { topic } = await startWorker({ handler: () => Promise.resolve({ status: 'SUCCEEDED', result: 'x'.repeat(DEFAULT_MAX_RESULT_BYTES) }) });
    const job = await publishJob(h, topic);
    expect(await resultOf(job.jobId)).toMatchObject({ status: JobStatus.FAILED, errorCode: 'result_too_large' });
  });

  test('a write Redis refuses stops being retried once the job is cancelled: CANCELLED well before resultWriteBudgetMs', async () => {
    const go = new Latch();
    let running = false;
    const { topic } = await startWorker({
      resultWriteBudgetMs: 30_000,
      handler: async () => {
        running = true;
        await go.promise;
        return { status: 'SUCCEEDED', result: { big: 'output' } };
      },
    });
    const job = await publishJob(h, topic);
    await waitFor(() => running, 5_000);
    const ooms = async (): Promise<number> => Number(/errorstat_OOM:count=(\d+)/.exec(await h.redis.info('errorstats'))?.[1] ?? 0);
    const before = await ooms();
    await h.redis.config('SET', 'maxmemory', '1');
    try {
      go.open();
      await waitFor(async () => (await ooms()) >= before + 1, 5_000, { message: 'the write refused' });
      await cancel(job.jobId);
      const r = await resultOf(job.jobId, 5_000);
      expect(r.status).toBe(JobStatus.CANCELLED);
      const after = await ooms();
      await new Promise((r) => setTimeout(r, 2_500)); // past the longest backoff: no try follows
      expect(await ooms()).toBe(after);
    } finally {
      await h.redis.config('SET', 'maxmemory', '0');
    }
    expect(await h.redis.exists(`res:${job.jobId}`)).toBe(0);
  });
});

describe('errors and outcomes', () => {
  test('a huge error message and code are cut to 4096 and 128 characters, so the result still goes out', async () => {
    const { topic } = await startWorker({
      handler: () => {
        throw Object.assign(new Error(`upstream said: ${'e'.repeat(2 * 1024 * 1024)}`), { code: 'c'.repeat(500) });
      },
    });
    const job = await publishJob(h, topic);
    const r = await resultOf(job.jobId, 5_000);
    expect(r.status).toBe(JobStatus.FAILED);
    expect(r.errorMessage).toHaveLength(4_096);
    expect(r.errorMessage.startsWith('upstream said: eee')).toBe(true);
    expect(r.errorMessage.endsWith('…')).toBe(true);
    expect(r.errorCode).toHaveLength(128);
  });

  test('a handler cannot answer with a code the worker reserves for its own answers: worker_busy, returned or thrown, goes out as handler_worker_busy (P178)', async () => {
    const busy = new Error('downstream overloaded') as Error & { code: string };
    busy.code = 'worker_busy';
    const { topic } = await startWorker({ handler: (job) => (job.request.jobId.endsWith('-thrown') ? Promise.reject(busy) : Promise.resolve({ status: 'FAILED_RETRYABLE', errorCode: 'worker_busy' })) });
    const returned = await publishJob(h, topic, { jobId: `reserved-${process.pid}-returned` });
    const thrown = await publishJob(h, topic, { jobId: `reserved-${process.pid}-thrown` });
    // the scheduler reads worker_busy as a refusal before the attempt started, not as a run
    expect(await resultOf(returned.jobId, 5_000)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'handler_worker_busy' });
    expect(await resultOf(thrown.jobId, 5_000)).toMatchObject({ status: JobStatus.FAILED, errorCode: 'handler_worker_busy', errorMessage: 'downstream overloaded' });
  });

  test('a returned failure with a huge message is cut the same way', async () => {
    const { topic } = await startWorker({ handler: () => Promise.resolve({ status: 'FAILED', errorCode: 'x'.repeat(200), errorMessage: 'm'.repeat(5_000_000) }) });
    const job = await publishJob(h, topic);
    const r = await resultOf(job.jobId, 5_000);
    expect({ status: r.status, code: r.errorCode.length, message: r.errorMessage.length }).toEqual({ status: JobStatus.FAILED, code: 128, message: 4_096 });
  });

  test.each([
    ['{status: "DONE"}', { status: 'DONE' }, /status 'DONE'/],
    ['undefined', undefined, /resolved to undefined/],
    ['null', null, /resolved to null/],
    ['a string', 'SUCCEEDED', /resolved to 'SUCCEEDED'/],
    ['status CANCELLED', { status: 'CANCELLED' }, /status 'CANCELLED'/],
    ['a numeric errorCode', { status: 'FAILED', errorCode: 500 }, /errorCode is 500, not a string/],
    // A lazily computed result whose getter throws (P137): before, an unhandled rejection, no result.
    ['a result getter that throws', { status: 'SUCCEEDED', get result(): unknown { throw new Error('lazy result failed'); } }, /outcome cannot be read \(lazy result failed\)/],
  ])('an invalid outcome (%s) is FAILED handler_invalid_outcome naming the expected shape', async (_name, outcome, why) => {
    const { topic } = await startWorker({ handler: () => Promise.resolve(outcome as never) });
    const job = await publishJob(h, topic);
    const r = await resultOf(job.jobId, 5_000);
    expect({ status: r.status, code: r.errorCode }).toEqual({ status: JobStatus.FAILED, code: 'handler_invalid_outcome' });
    expect(r.errorMessage).toMatch(why);
    expect(r.errorMessage).toContain("a handler must resolve to { status: 'SUCCEEDED' | 'FAILED' | 'FAILED_RETRYABLE'");
  });

  test.each([
    ['an object', { reason: 'an object, not an Error' }, "the handler threw a non-Error value: { reason: 'an object, not an Error' }"],
    ['undefined', undefined, 'the handler threw undefined (throw an Error with a message)'],
    ['null', null, 'the handler threw null (throw an Error with a message)'],
    ['a string', 'plain string thrown', 'plain string thrown'],
    ['an Error without a message', new TypeError(''), 'TypeError (no message)'],
    ['a number', 42, 'the handler threw a non-Error value: 42'],
  ])('a throw of %s gives a readable error_message', async (_name, thrown, message) => {
    const { topic } = await startWorker({ handler: () => Promise.reject(thrown) });
    const job = await publishJob(h, topic);
    expect(await resultOf(job.jobId, 5_000)).toMatchObject({ status: JobStatus.FAILED, errorCode: 'handler_error', errorMessage: message });
  });

  test('every failed job is logged once at warn (job_id, error_code, cut message); an Error stack at debug', async () => {
    const { logger, lines } = capture();
    const { topic } = await startWorker({
      logger,
      handler: (job) => {
        const p = (job.input as { prompt: string }).prompt;
        if (p === 'throw') throw Object.assign(new Error(`model quota exceeded ${'q'.repeat(5_000)}`), { code: 'quota' });
        if (p === 'fail') return Promise.resolve({ status: 'FAILED_RETRYABLE', errorCode: 'busy_upstream', errorMessage: 'try later' });
        return Promise.resolve({ status: 'SUCCEEDED' });
      },
    });
    const thrown = await publishJob(h, topic, { prompt: 'throw' });
    const failed = await publishJob(h, topic, { prompt: 'fail' });
    const ok = await publishJob(h, topic, { prompt: 'ok' });
    await Promise.all([resultOf(thrown.jobId), resultOf(failed.jobId), resultOf(ok.jobId)]);
    const warns = lines.filter((l) => l.msg === 'job failed');
    expect(warns).toHaveLength(2);
    const t = warns.find((l) => l.job_id === thrown.jobId)!;
    expect(t).toMatchObject({ level: 'warn', status: 'FAILED', error_code: 'quota', dispatch_id: thrown.dispatchId });
    expect((t.err as string).startsWith('model quota exceeded qqq')).toBe(true);
    expect((t.err as string).length).toBeLessThanOrEqual(1_000);
    expect(warns.find((l) => l.job_id === failed.jobId)).toMatchObject({ level: 'warn', status: 'FAILED_RETRYABLE', error_code: 'busy_upstream', err: 'try later' });
    const stack = lines.find((l) => l.msg === 'handler error stack' && l.job_id === thrown.jobId);
    expect(stack).toMatchObject({ level: 'debug' });
    expect(stack!.stack as string).toMatch(/handler-faults\.spec\.ts/);
  });
});

describe('stats and cordum_worker_jobs_total count every answer', () => {
  test('worker_busy refusals and worker_shutdown hand-backs are counted by status and in their own fields', async () => {
    const registry = new Registry();
    const release = new Latch();
    const { w, topic } = await startWorker({ registry, maxParallelJobs: 1, stopTimeoutMs: 100, handler: async () => (await release.promise, { status: 'SUCCEEDED' }) });
    const first = await publishJob(h, topic);
    await waitFor(() => w.stats().activeJobs === 1);
    const second = await publishJob(h, topic);
    expect(await resultOf(second.jobId)).toMatchObject({ errorCode: 'worker_busy' });
    await w.stop();
    expect(await resultOf(first.jobId)).toMatchObject({ errorCode: 'worker_shutdown' });
    expect(w.stats()).toMatchObject({ rejectedBusy: 1, handedBack: 1, retryable: 2, succeeded: 0 });
    expect(await registry.getSingleMetricAsString('cordum_worker_jobs_total')).toMatch(/status="FAILED_RETRYABLE"} 2/);
    release.open();
  });
});

describe('worker ids', () => {
  test('two workers with one id find each other on the direct subject and both warn; a unique id does not', async () => {
    const a = capture();
    const b = capture();
    const solo = capture();
    const id = `same-id-${process.pid}`;
    const handler: JobHandler = () => Promise.resolve({ status: 'SUCCEEDED' });
    await startWorker({ workerId: id, logger: a.logger, handler });
    await startWorker({ workerId: `solo-${process.pid}`, logger: solo.logger, handler });
    await startWorker({ workerId: id, logger: b.logger, handler });
    const msg = 'another process runs with this worker id: worker ids must be unique';
    await waitFor(() => a.lines.some((l) => l.msg === msg) && b.lines.some((l) => l.msg === msg), 5_000, { message: 'both warn' });
    expect(a.lines.find((l) => l.msg === msg)).toMatchObject({ level: 'warn', worker_id: id, direct_subject: `worker.${id}.jobs` });
    await h.bus.flush();
    expect(a.lines.filter((l) => l.msg === msg)).toHaveLength(1);
    expect(b.lines.filter((l) => l.msg === msg)).toHaveLength(1);
    expect(solo.lines.some((l) => l.msg === msg)).toBe(false);
    // The marker is not a packet: neither worker counted it as a bad one.
    expect(workers.every((w) => w.stats().badPackets === 0)).toBe(true);
  });

  test('eighteen processes on one id exchange a bounded number of markers and then fall silent (P159)', async () => {
    const id = `crowd-${process.pid}`;
    const n = 18;
    let markers = 0;
    const sub = h.bus.subscribe(`worker.${id}.instance`, () => void (markers += 1));
    await h.bus.flush();
    const handler: JobHandler = () => Promise.resolve({ status: 'SUCCEEDED' });
    try {
      for (let i = 0; i < n; i++) await startWorker({ workerId: id, handler });
      // Silent: no marker between two looks 300 ms apart (before P159, full processes answered each other for ever).
      let previous = -1;
      await waitFor(
        async () => {
          await h.bus.flush();
          const still = markers === previous;
          previous = markers;
          return still;
        },
        10_000,
        { intervalMs: 300, message: 'the markers stop' },
      );
      // Each start announces once; each process answers at most the 16 it remembers.
      expect(markers).toBeGreaterThanOrEqual(n);
      expect(markers).toBeLessThanOrEqual(n + n * 16);
    } finally {
      sub.unsubscribe();
    }
  });

});

// P233: a stopping worker unsubscribed before its last heartbeat reached the schedulers, so a
// dispatch sent meanwhile (core NATS) reached nobody and waited for the dispatch verifier (10 s).
describe('a worker that begins to stop', () => {
  test('refuses a job sent just after stop() began worker_busy at once (not started, so not charged), instead of leaving it unanswered', async () => {
    const { w, topic } = await startWorker({ handler: () => Promise.resolve({ status: 'SUCCEEDED' }) });
    const stopping = w.stop();
    const job = await publishJob(h, topic);
    expect(await resultOf(job.jobId, 5_000)).toMatchObject({ status: JobStatus.FAILED_RETRYABLE, errorCode: 'worker_busy' });
    await stopping;
    expect(w.stats()).toMatchObject({ handedBack: 1, succeeded: 0 });
  });
});
