// P188: a markPublished that Redis fails after the attempt's flush is tried again under the same
// lock, so the submit's re-run does not publish the attempt a second time. A CAP worker on the
// topic's queue group without start acks (SCHEDULER_DISPATCH_UNTRACKED) has no worker-sdk claim:
// every JobRequest it gets, it runs, so the count of requests it hears is the count of runs.
// In process against real Redis + NATS; the failures are injected through the scheduler's
// `wrapStore` seam.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import type { JobStore } from '@cordum/job-store';
import { decodePacket } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { QUEUE } from '../src/context';
import { quietLog, startTestKernel, type TestKernel } from './harness';
import { startSchedulerRig, type SchedulerRig } from './rig';

/** What the next markPublished of job `id` does: throw before Redis, or apply and then throw (a lost reply); `refused`: every one is refused until cleared. */
const faults = new Map<string, 'before' | 'after' | 'refused'>();
let markCalls = 0;
const wrapStore = (s: JobStore): JobStore => ({
  ...s,
  async markPublished(...a: Parameters<JobStore['markPublished']>) {
    markCalls += 1;
    const fault = faults.get(a[0]);
    if (fault === 'refused') throw new Error("OOM command not allowed when used memory > 'maxmemory'.");
    faults.delete(a[0]);
    if (fault === 'before') throw new Error('Connection is closed.');
    const m = await s.markPublished(...a);
    if (fault === 'after') throw new Error('Command timed out');
    return m;
  },
});

const logs: string[] = [];
let rig: SchedulerRig;
let kernel: TestKernel;
let cap: Bus;
const heard = new Map<string, string[]>();

beforeAll(async () => {
  kernel = await startTestKernel([]);
  // A 3 s lock: P188's retry gives up after one lock TTL of failures.
  const logger = createLogger({ service: 'scheduler', instance: 'sched-mark', level: 'warn', write: (line) => void logs.push(line) });
  rig = await startSchedulerRig({ instanceId: 'sched-mark', kernelAddress: kernel.address, env: { SCHEDULER_DISPATCH_UNTRACKED: 'true', SCHEDULER_JOB_LOCK_TTL: '3s' }, deps: { wrapStore }, logger });
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

it('a Redis that keeps refusing the mark while the lock renews (OOM) holds the handler for one lock TTL, not for as long as it lasts', async () => {
  const id = 'mark-refused';
  faults.set(id, 'refused');
  await rig.submit(id, 'job.capx');
  // After one 3 s lock TTL of tries (50 ms doubling to 1 s), the handler ends and lets the lock go.
  await waitFor(() => logs.some((l) => l.includes('giving up, the attempt may be sent again') && l.includes(id)), 15_000, { message: 'gave up' });
  faults.delete(id); // Redis takes writes again: the redelivered submit sends the attempt again (D2's window) and marks it
  await settled(id);
  const job = await rig.job(id);
  expect(job).toMatchObject({ state: 'DISPATCHED', attempts: 1 });
  expect(new Set(heard.get(id))).toEqual(new Set([job.dispatch?.dispatchId]));
  expect(markCalls).toBeGreaterThan(3);
});

