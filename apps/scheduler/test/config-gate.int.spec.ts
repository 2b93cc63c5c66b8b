// P152: a scheduler whose first load of the stored config fails (here a `scheduler` section its
// setter refuses) takes no job until the load succeeds: before, it bound its consumers and ran its
// leader loops at once with the files' pools and timeouts and the env's fail modes, so a job could
// go out under input_fail_mode the cluster had turned off. Real Redis + NATS, in process.
import { subjects } from '@cordum/bus';
import { createConfigStore } from '@cordum/config-overlay';
import { Decision } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { QUEUE } from '../src/context';
import { startTestKernel, startTestWorker, type TestKernel, type TestWorker } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const TOPIC = 'job.config.gate';
let rig: SchedulerRig;
let kernel: TestKernel;
let worker: TestWorker | undefined;

beforeAll(async () => {
  kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
  rig = await startSchedulerRig({
    instanceId: 'sched-config-gate',
    kernelAddress: kernel.address,
    env: { SCHEDULER_REPLAY_INTERVAL: '200ms' },
    // A section the scheduler refuses (fail modes are lower case): its first load fails.
    beforeStart: async (redis) => void (await createConfigStore(redis).put('system', 'default', { scheduler: { input_fail_mode: 'CLOSED' } })),
  });
  worker = await startTestWorker({ natsUrl: rig.natsServer.url, redis: rig.redis, id: 'tw-config-gate', topics: [TOPIC], replyFor: () => 'succeed' });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  await rig?.stop();
  await kernel?.stop();
});

const readyz = async (): Promise<number> => (await fetch(`http://127.0.0.1:${rig.scheduler.httpPort}/readyz`)).status;

it('takes no job until its stored config loads, then runs the waiting job once', async () => {
  await waitFor(() => rig.scheduler.workers.live().some((v) => v.workerId === 'tw-config-gate' && v.readyTopics.length > 0), 10_000, { message: 'worker registered' });
  expect(await readyz()).toBe(503);
  const job = await rig.submit(`config-gate-${process.pid}`, TOPIC);
  await rig.bus.flush();
  // No consumer of the submits exists yet, so nothing can take the job (before: bound at start).
  await expect(rig.bus.backlog(QUEUE, subjects.submit)).rejects.toThrow(/consumer not found/i);
  expect((await rig.job(job.id)).state).toBe('PENDING');

  await createConfigStore(rig.redis).put('system', 'default', { scheduler: { input_fail_mode: 'closed' } });
  await waitFor(async () => (await readyz()) === 200, 20_000, { message: 'ready once the section loads (the watcher retries within 5 s)', intervalMs: 200 });
  await waitFor(async () => (await rig.job(job.id)).state === 'SUCCEEDED', 15_000, { message: 'the waiting job runs' });
  expect(worker?.count(job.id)).toBe(1);
  expect(rig.scheduler.failModes.inputFailMode).toBe('closed');
}, 60_000);

describe('NATS away when the stored config finally loads (P161)', () => {
  let late: SchedulerRig;
  const lines: { msg: string }[] = [];

  beforeAll(async () => {
    late = await startSchedulerRig({
      instanceId: 'sched-config-gate-late',
      kernelAddress: kernel.address,
      logger: createLogger({ service: 'scheduler', instance: 'late', level: 'error', write: (l) => void lines.push(JSON.parse(l) as { msg: string }) }),
      beforeStart: async (redis) => void (await createConfigStore(redis).put('system', 'default', { scheduler: { input_fail_mode: 'CLOSED' } })),
    });
  }, 60_000);

  afterAll(async () => {
    await late?.stop();
  });

  it('binding the consumers fails while NATS is frozen, is retried, and the replica turns ready once NATS answers', async () => {
    const lateReadyz = async (): Promise<number> => (await fetch(`http://127.0.0.1:${late.scheduler.httpPort}/readyz`)).status;
    expect(await lateReadyz()).toBe(503);
    await late.natsServer.process.freeze();
    try {
      await createConfigStore(late.redis).put('system', 'default', { scheduler: { input_fail_mode: 'closed' } });
      // The load succeeds (Redis only); binding the first consumer times out against the frozen server.
      await waitFor(() => lines.some((l) => l.msg.startsWith('scheduler could not start taking jobs')), 30_000, { message: 'the failed bind', intervalMs: 100 });
    } finally {
      late.natsServer.process.thaw();
    }
    // Before P161 that failure was logged once and the replica stayed unready, taking no job, for good.
    await waitFor(async () => (await lateReadyz()) === 200, 30_000, { message: 'ready once NATS answers', intervalMs: 200 });
    await expect(late.bus.backlog(QUEUE, subjects.submit)).resolves.toMatchObject({ undelivered: 0 });
  }, 90_000);
});
