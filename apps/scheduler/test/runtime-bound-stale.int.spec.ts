// P65's max_runtime_ms bound is one `job:deadline` entry per job, moved by each attempt's publish.
// When that write fails (recordRuntimeBound logs it and publishes anyway), the entry still holds
// the previous attempt's bound, and the deadline pass ended the new attempt when that older bound
// came due: early, with max_runtime_exceeded. An entry earlier than the current attempt's own
// bound is now replaced by it. In process against real Redis + NATS; the failed write is the
// scheduler's `wrapStore` seam.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import type { JobStore } from '@cordum/job-store';
import { setTimeout as sleep } from 'node:timers/promises';
import { create, Decision, encodePacket, JobRequestSchema, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const MAX_RUNTIME_MS = 3_000;

describe('max_runtime_ms: a bound write that failed does not end the next attempt early (P65, real Redis + NATS)', () => {
  let rig: SchedulerRig;
  let kernel: TestKernel;
  let worker: TestWorker;
  const tmp = mkdtempSync(join(tmpdir(), 'runtime-bound-'));
  let failed = 0;
  const wrapStore = (s: JobStore): JobStore => ({
    ...s,
    async setDeadline(id, atMs) {
      // Attempt 2's bound, written by its publish (the record is DISPATCHED and not yet published).
      const job = atMs === null ? null : await s.getJob(id);
      if (job?.attempts === 2 && job.dispatch && !job.dispatch.published && failed === 0) {
        failed += 1;
        throw new Error('bound write failed (test seam)');
      }
      return s.setDeadline(id, atMs);
    },
  });

  beforeAll(async () => {
    const timeouts = join(tmp, 'timeouts.yaml');
    writeFileSync(timeouts, 'reconciler:\n  dispatch_timeout_seconds: 30\n  running_timeout_seconds: 60\n  scan_interval_seconds: 1\n');
    kernel = await startTestKernel(() => ({ decision: Decision.ALLOW_WITH_CONSTRAINTS, reason: 'bounded', ruleId: 'cap-runtime', policySnapshot: 'snap-test', constraints: { maxRuntimeMs: BigInt(MAX_RUNTIME_MS) } }));
    rig = await startSchedulerRig({ instanceId: 'sched-runtime-bound', kernelAddress: kernel.address, env: { TIMEOUT_CONFIG_PATH: timeouts }, deps: { wrapStore } });
    worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-bound', topics: ['job.bound'], replyFor: () => 'none' });
    await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-bound' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  }, 60_000);

  afterAll(async () => {
    await worker?.stop();
    await rig?.stop();
    await kernel?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('attempt 2, whose bound was not recorded, runs its whole max_runtime_ms before it ends max_runtime_exceeded', async () => {
    const id = `runtime-bound-${process.pid}`;
    const job = await rig.store.createJob({ id, tenant: 'acme', topic: 'job.bound', traceId: `t-${id}`, priority: 'batch', labels: {}, prompt: 'hi', context: null, principalId: 'p', riskTags: [], requires: [], initialState: 'PENDING' });
    const req = create(JobRequestSchema, { jobId: job.id, topic: job.topic, contextPtr: job.contextPtr, tenantId: job.tenant });
    await rig.bus.publish(subjects.submit, encodePacket(newPacket('gateway-test', { case: 'jobRequest', value: req }, job.traceId)), { msgId: `jobreq:${id}:0:0` });
    await waitFor(() => worker.count(id) === 1, 20_000, { message: 'attempt 1 reaches the worker' });
    // Attempt 1 runs 1.5 s of its 3 s, then fails retryably; attempt 2 goes out at once (a free
    // worker), and its bound's write fails: the entry still says attempt 1's start + 3 s.
    await sleep(1_500);
    const first = worker.executions.get(id)![0]!.request.dispatch!;
    const result = create(JobResultSchema, { jobId: id, status: JobStatus.FAILED_RETRYABLE, workerId: 'tw-bound', errorCode: 'flaky', errorMessage: 'try again', dispatch: first });
    await rig.bus.publish(subjects.result, encodePacket(newPacket('tw-bound', { case: 'jobResult', value: result })), { msgId: `sys.job.result:${id}:${first.dispatchId}` });
    await waitFor(() => worker.count(id) === 2, 20_000, { message: 'attempt 2 reaches the worker' });
    expect(failed).toBe(1);
    await waitFor(async () => (await rig.store.getJob(id))?.state === 'TIMEOUT', 20_000, { message: 'attempt 2 ends at its bound', intervalMs: 100 });
    const end = (await rig.store.getJob(id))!;
    expect(end.error?.code).toBe('max_runtime_exceeded');
    expect(end.attempts).toBe(2);
    // Before: ended when attempt 1's bound came due, about 1.5 s into attempt 2.
    expect(end.updatedAt - end.dispatchedAt!).toBeGreaterThanOrEqual(MAX_RUNTIME_MS);
  }, 60_000);
});
