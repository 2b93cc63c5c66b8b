// worker-sdk repeats every running job's progress each heartbeat, so a Redis outage fails every
// one of them at the scheduler: one `progress handling failed` line per kind of failure per 30 s,
// not one per message (P162; 1,000 running jobs on a 5 s heartbeat made 200 lines a second).
// In process against real Redis + NATS; Redis is frozen (SIGSTOP) so every command times out.
import { subjects } from '@cordum/bus';
import { create, Decision, DispatchIdentitySchema, encodePacket, JobProgressSchema, JobStatus, newPacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let kernel: TestKernel;
const lines: { msg: string; suppressed?: number }[] = [];

beforeAll(async () => {
  kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
  rig = await startSchedulerRig({
    instanceId: 'sched-progress-outage',
    kernelAddress: kernel.address,
    logger: createLogger({ service: 'scheduler', instance: 'progress-outage', level: 'warn', write: (l) => void lines.push(JSON.parse(l) as { msg: string }) }),
  });
}, 60_000);

afterAll(async () => {
  await rig?.stop();
  await kernel?.stop();
});

it('50 progress messages that all fail on a frozen Redis log one line, not 50 (P162)', async () => {
  const failed = () => lines.filter((l) => l.msg === 'progress handling failed');
  await rig.redisServer.process.freeze();
  try {
    for (let i = 0; i < 50; i++) {
      const dispatch = create(DispatchIdentitySchema, { dispatchId: `d-${i}`, attempt: 1n });
      rig.bus.publishCore(subjects.progress, encodePacket(newPacket('tw-outage', { case: 'jobProgress', value: create(JobProgressSchema, { jobId: `outage-${i}`, status: JobStatus.RUNNING, dispatch }) })));
    }
    await rig.bus.flush();
    await waitFor(() => failed().length > 0, 20_000, { message: 'the first failure', intervalMs: 100 });
  } finally {
    rig.redisServer.process.thaw();
  }
  // The 50 were sent together, so they time out together: before P162, one line each.
  expect(failed()).toHaveLength(1);
  expect(failed()[0]).toMatchObject({ level: 'warn', job_id: expect.stringMatching(/^outage-\d+$/) as unknown });
}, 60_000);
