// P263: a scheduler whose NATS socket is up while JetStream does not answer (here a frozen
// nats-server, before the client's pings notice) is not ready: no dispatch it makes would be
// stored. Real Redis + NATS, in process.
import { Decision } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

let rig: SchedulerRig;
let kernel: TestKernel;

beforeAll(async () => {
  kernel = await startTestKernel(() => ({ decision: Decision.ALLOW, reason: 'ok', ruleId: 'allow-all', policySnapshot: 'snap-test' }));
  rig = await startSchedulerRig({ instanceId: 'sched-readiness', kernelAddress: kernel.address });
}, 60_000);

afterAll(async () => {
  await rig?.stop();
  await kernel?.stop();
});

const readyz = async (): Promise<{ status: number; checks: Record<string, boolean> }> => {
  const res = await fetch(`http://127.0.0.1:${rig.scheduler.httpPort}/readyz`);
  return { status: res.status, checks: ((await res.json()) as { checks: Record<string, boolean> }).checks };
};

it('is 503 with jetstream false while its nats-server is frozen and the connection still counts as up; 200 again after SIGCONT', async () => {
  await waitFor(async () => (await readyz()).status === 200, 20_000, { message: 'scheduler ready' });
  expect((await readyz()).checks).toMatchObject({ nats: true, jetstream: true });
  await rig.natsServer.process.freeze();
  try {
    // The client's pings (every 5 s, two unanswered) notice a frozen server after 10 s or more;
    // the stream request's 1.5 s timeout and the half second a shared answer stands (P268) are less.
    const frozen = await waitFor(async () => {
      const r = await readyz();
      return r.status === 503 ? r : undefined;
    }, 4_000, { message: '/readyz 503 with NATS frozen' });
    expect(frozen.checks).toMatchObject({ redis: true, nats: true, jetstream: false });
  } finally {
    rig.natsServer.process.kill('SIGCONT');
  }
  await waitFor(async () => (await readyz()).status === 200, 20_000, { message: 'ready after SIGCONT' });
});
