// P190: a scheduler cut off from NATS gives up its leader leases (reconciler, pending replayer,
// snapshot writer), so a replica that hears the workers takes them over, and takes them back once
// its bus is connected again. In process against real Redis + NATS; NATS is stopped and restarted.
import { waitFor, type TestServer } from '@cordum/testing';
import { startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

const LEASES = ['cordum:reconciler:default', 'cordum:replayer:pending', 'cordum:scheduler:snapshot:writer'];

let rig: SchedulerRig;
let kernel: TestKernel;
let revived: TestServer | undefined;

beforeAll(async () => {
  kernel = await startTestKernel([]);
  rig = await startSchedulerRig({ instanceId: 'sched-bus', kernelAddress: kernel.address });
}, 60_000);

afterAll(async () => {
  await rig?.stop();
  await revived?.stop();
  await kernel?.stop();
});

/** The owner part (`<owner>:<fence>`) of each lease key, null when nobody holds it. */
const owners = async (): Promise<(string | null)[]> => Promise.all(LEASES.map(async (k) => (await rig.redis.get(k))?.replace(/:\d+$/, '') ?? null));

it('gives every leader lease up while NATS is away, and leads again once connected', async () => {
  await waitFor(async () => (await owners()).every((o) => o === 'sched-bus'), 20_000, { message: 'the lone replica leads all three' });
  await rig.natsServer.process.stop(5_000);
  // Released at the next renew (5 s), well before the 15 s / 30 s TTLs would have freed them.
  await waitFor(async () => (await owners()).every((o) => o === null), 10_000, { message: 'all three leases released' });
  revived = await rig.natsServer.restart();
  await waitFor(async () => (await owners()).every((o) => o === 'sched-bus'), 30_000, { message: 'leads all three again' });
}, 90_000);
