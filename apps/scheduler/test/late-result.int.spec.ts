// P227: a result sent before its attempt's bound, but held unacknowledged by a replica that
// stalled (a GC pause, a frozen VM, a replica that died after fetching it: JetStream gives it to
// another only after AckWait), must not lose to the reconciler: the job ended TIMEOUT
// max_runtime_exceeded although it had succeeded, its result was ignored, and a retry from the
// DLQ ran it again. The stall is the scheduler's own result handler held at its `finish` write
// (the `wrapStore` seam): the message stays delivered and unacknowledged, as in a frozen replica.
// A job whose worker never answers still times out, once LATE_RESULT_MS past its bound, however
// long the held result stays held.
// In process against real Redis + NATS.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobStore } from '@cordum/job-store';
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { LATE_RESULT_MS } from '../src/reconciler';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC_ANSWERED = 'job.late.answered';
const TOPIC_SILENT = 'job.late.silent';

describe('an attempt whose result is held by a stalled handler past its max_runtime_ms (in-process, real Redis + NATS)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'cordum-late-result-'));
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  const held = new Set<string>();
  let release: () => void = () => undefined;
  const released = new Promise<void>((r) => (release = r));
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async finish(id, to, o) {
      if (held.has(id)) await released;
      return s.finish(id, to, o);
    },
  });

  beforeAll(async () => {
    // The silent job's bound is 1 s, the answered one's 20 s: it passes while the result is held,
    // and LATE_RESULT_MS after it is still to come when the silent one has timed out.
    kernel = await startTestKernel((req) => ({ decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'capped', ruleId: 'cap-runtime', policySnapshot: 'snap-test', constraints: { maxRuntimeMs: req.topic === TOPIC_SILENT ? 1_000n : 20_000n } }));
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 120\n  running_timeout_seconds: 300\n  scan_interval_seconds: 0.3\n');
    rig = await startSchedulerRig({ instanceId: 'sched-late-result', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts }, deps: { wrapStore } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-late', topics: [TOPIC_ANSWERED, TOPIC_SILENT], replyFor: (t) => (t === TOPIC_SILENT ? 'none' : 'succeed') });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-late' && v.readyTopics.includes(TOPIC_SILENT)), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    release();
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('the held result wins once applied; a job with no result times out LATE_RESULT_MS after its bound meanwhile', async () => {
    const answered = `late-answered-${process.pid}`;
    const silent = `late-silent-${process.pid}`;
    held.add(answered);
    await rig.submit(silent, TOPIC_SILENT);
    await rig.submit(answered, TOPIC_ANSWERED);
    await waitFor(() => worker.count(answered) === 1 && worker.count(silent) === 1, 10_000, { message: 'both attempts reached the worker' });
    // The answered job's result is held from here on. The silent job's bound passes at once, and
    // its TIMEOUT waits LATE_RESULT_MS, since a held result could be its own.
    await waitFor(async () => (await rig.job(silent)).state === 'TIMEOUT', LATE_RESULT_MS + 15_000, { message: 'the silent job timed out', intervalMs: 250 });
    const ended = await rig.job(silent);
    expect(ended.error?.code).toBe('max_runtime_exceeded');
    // (its bound counts from the publish, a moment after dispatchedAt)
    expect(ended.updatedAt - ((ended.dispatchedAt ?? 0) + 1_000)).toBeGreaterThanOrEqual(LATE_RESULT_MS);
    // The answered job's bound (20 s) passed meanwhile too: its TIMEOUT waits for the held result.
    const answeredJob = await rig.job(answered);
    expect(Date.now()).toBeGreaterThan((answeredJob.dispatchedAt ?? 0) + 20_000);
    expect(answeredJob.state).toBe('RUNNING');
    expect(await rig.counter('cordum_scheduler_reconciled_total', { action: 'timeout_deferred' })).toBeGreaterThan(0);
    release();
    await waitFor(async () => (await rig.job(answered)).state === 'SUCCEEDED', 10_000, { message: 'the held result applied', intervalMs: 100 });
    expect([worker.count(answered), worker.count(silent)]).toEqual([1, 1]);
  }, LATE_RESULT_MS + 60_000);
});
