// P330: the result handler's terminal write committed in Redis but its reply was lost (a command
// timeout, a dropped socket with the command in flight). The handler failed, the result was
// redelivered, and the redelivery found the job already terminal: it re-ran the DLQ write and the
// result's TTL, but not the index move or the D15 broadcast, which only the lost call would have
// made. WebSocket clients never saw the job end; it stayed in job:active:RUNNING and out of its
// tenant's SUCCEEDED listing. Now the redelivery runs the write's side effects when it finds the
// job still filed in flight. Real Redis + NATS; the store's finish is wrapped to run its script
// and then throw, as a lost reply does.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { subjects } from '@cordum/bus';
import { jobKeys, type JobStore } from '@cordum/job-store';
import { create, decodePacket, encodePacket, JobResultSchema, JobStatus, newPacket } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startRunnerRig, startedJob, type RunnerRig } from './rig';

const finishLua = readFileSync(join(__dirname, '../../../libs/job-store/src/lua/finish-2.lua'), 'utf8');
let rr: RunnerRig | undefined;
let lose = false;
/** The D15 broadcast: the states each job was announced in. */
const announced = new Map<string, string[]>();

beforeAll(async () => {
  rr = await startRunnerRig({
    policy: [],
    instanceId: 'sched-lost-reply',
    workerId: 'w-lost',
    topic: 'job.echo',
    deps: {
      wrapStore: (s: JobStore): JobStore => ({
        ...s,
        finish: async (id, to, o) => {
          if (!lose) return s.finish(id, to, o);
          lose = false;
          // The script runs in Redis; its reply never reaches the scheduler.
          await rr!.rig.redis.eval(finishLua, 2, jobKeys.meta(id), jobKeys.lock(id), to, o.dispatchId, String(Date.now()));
          throw new Error('connection lost with the command in flight: it may or may not have run');
        },
      }),
    },
  });
  rr.rig.bus.subscribe(subjects.state, (data) => {
    const p = decodePacket(data);
    if (p.payload.case !== 'jobProgress') return;
    announced.set(p.payload.value.jobId, [...(announced.get(p.payload.value.jobId) ?? []), p.payload.value.message]);
  });
  await rr.rig.bus.flush();
}, 60_000);

afterAll(async () => {
  await rr?.stop();
});

it('a SUCCEEDED write whose reply was lost is broadcast and listed by the redelivered result, and its worker ran it once', async () => {
  const { rig, worker } = rr!;
  const { id, dispatch } = await startedJob(rig, worker, 'lost-reply-1', 'job.echo');
  const ignoredTerminal = await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'result', reason: 'terminal' });
  lose = true;
  const result = create(JobResultSchema, { jobId: id, status: JobStatus.SUCCEEDED, workerId: 'w-lost', dispatch });
  await rig.bus.publish(subjects.result, encodePacket(newPacket('w-lost', { case: 'jobResult', value: result })), { msgId: `r:${id}` });
  // The redelivery finds the job terminal (counted as a result ignored: terminal).
  await waitFor(async () => (await rig.counter('cordum_scheduler_ignored_packets_total', { kind: 'result', reason: 'terminal' })) === ignoredTerminal + 1, 15_000, { message: 'the result redelivered' });
  expect(lose).toBe(false);
  // Before: never announced, still filed RUNNING, not in the SUCCEEDED listing.
  await waitFor(() => announced.get(id)?.includes('SUCCEEDED') === true, 5_000, { message: 'SUCCEEDED broadcast' });
  expect(await rig.redis.zscore(jobKeys.active('RUNNING'), id)).toBeNull();
  expect(await rig.redis.zscore(jobKeys.indexState('acme', 'SUCCEEDED'), id)).not.toBeNull();
  expect(await rig.redis.zscore(jobKeys.indexState('acme', 'RUNNING'), id)).toBeNull();
  expect(announced.get(id)?.filter((s) => s === 'SUCCEEDED')).toHaveLength(1);
  expect(worker.count(id)).toBe(1);
}, 40_000);
