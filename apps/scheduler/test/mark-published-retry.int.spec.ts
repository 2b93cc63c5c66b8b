// P188: a markPublished that Redis fails after the attempt's flush is tried again under the same
// lock, so the submit's re-run does not publish the attempt a second time. A CAP worker on the
// topic's queue group without start acks (SCHEDULER_DISPATCH_UNTRACKED) has no worker-sdk claim:
// every JobRequest it gets, it runs, so the count of requests it hears is the count of runs.
// In process against real Redis + NATS; the failures are injected through the scheduler's
// `wrapStore` seam.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import type { JobStore } from '@cordum/job-store';
import { decodePacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { QUEUE } from '../src/context';
import { quietLog, startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

/** What the next markPublished of job `id` does: throw before Redis, or apply and then throw (a lost reply). */
const faults = new Map<string, 'before' | 'after'>();
const wrapStore = (s: JobStore): JobStore => ({
  ...s,
  async markPublished(...a: Parameters<JobStore['markPublished']>) {
    const fault = faults.get(a[0]);
    faults.delete(a[0]);
    if (fault === 'before') throw new Error('Connection is closed.');
    const m = await s.markPublished(...a);
    if (fault === 'after') throw new Error('Command timed out');
    return m;
  },
});

let rig: SchedulerRig;
let kernel: TestKernel;
let cap: Bus;
const heard = new Map<string, string[]>();

beforeAll(async () => {
  kernel = await startTestKernel([]);
  rig = await startSchedulerRig({ instanceId: 'sched-mark', kernelAddress: kernel.address, env: { SCHEDULER_DISPATCH_UNTRACKED: 'true' }, deps: { wrapStore } });
  cap = await connectBus({ servers: [rig.natsServer.url], name: 'cap-worker', logger: quietLog });
  cap.subscribe(
    'job.capx',
    (data) => {
      const p = decodePacket(data);
      if (p.payload.case !== 'jobRequest') return;
      const id = p.payload.value.jobId;
      heard.set(id, [...(heard.get(id) ?? []), p.payload.value.dispatch?.dispatchId ?? '']);
    },
    { queue: 'job.capx' },
  );
  await cap.flush();
}, 60_000);

afterAll(async () => {
  await cap?.close();
  await rig?.stop();
  await kernel?.stop();
});

/** Until the job's attempt is marked and its submit acked; then every request sent before has reached `cap`. */
async function settled(id: string): Promise<void> {
  await waitFor(async () => (await rig.job(id)).dispatch?.published === true && (await rig.bus.backlog(QUEUE, subjects.submit)).unacked === 0, 20_000, { message: `${id} marked and acked` });
  await cap.flush();
}

it.each([
  ['before', 'never reached Redis'],
  ['after', 'was applied and its reply lost (the lock already deleted)'],
] as const)('a markPublished that failed (%s: %s) is tried again: the attempt is sent once', async (fault, _what) => {
  const id = `mark-${fault}`;
  faults.set(id, fault);
  await rig.submit(id, 'job.capx');
  await settled(id);
  expect(faults.has(id)).toBe(false); // the fault was hit
  const job = await rig.job(id);
  expect(heard.get(id)).toEqual([job.dispatch?.dispatchId]);
  expect(job).toMatchObject({ state: 'DISPATCHED', attempts: 1 });
  expect(await rig.redis.exists(`cordum:scheduler:job:{${id}}`)).toBe(0); // D6: released once marked
});
