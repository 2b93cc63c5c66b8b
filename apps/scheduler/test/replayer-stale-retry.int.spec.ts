// P338: the replayer read its due job:retry entries, then removed each by id and drove it. A pass
// that outlived its leadership (a leader frozen mid-pass, or one whose lease was revoked while the
// pass went on) removed an entry another leader's retry had re-filed meanwhile, and drove the job
// at once: the next attempt went out with no backoff. Now an entry is taken only while it is still
// the one read. Here the listing is wrapped: right after it is read, the job's entry is re-filed
// 30 s later, as a new attempt's retryable failure would file it. Executions counted on the worker.
import { jobKeys, type JobStore } from '@cordum/job-store';
import { JobStatus } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { startRunnerRig, type RunnerRig } from './rig';

const TOPIC = 'job.replay.stale';
let setup: RunnerRig | undefined;
/** The job whose entry is re-filed right after the replayer lists it. */
let refile: string | null = null;
let listings = 0;

beforeAll(async () => {
  setup = await startRunnerRig({
    policy: [],
    instanceId: 'sched-replay-stale',
    env: { SCHEDULER_REPLAY_INTERVAL: '200ms' },
    workerId: 'tw-replay-stale',
    topic: TOPIC,
    deps: {
      wrapStore: (s: JobStore): JobStore => ({
        ...s,
        async listRetryDue(nowMs, limit) {
          const due = await s.listRetryDue(nowMs, limit);
          listings += 1;
          const id = refile;
          if (id !== null && due.some((e) => e.id === id)) {
            refile = null;
            await s.scheduleRetry(id, Date.now() + 30_000);
          }
          return due;
        },
      }),
    },
  });
}, 60_000);

afterAll(async () => {
  await setup?.stop();
});

it('a due retry entry re-filed after the replayer read it is left to its new time: no attempt before it', async () => {
  const { rig, worker } = setup!;
  const job = await rig.submit(`stale-${process.pid}`, TOPIC);
  const first = await waitFor(() => worker.executions.get(job.id)?.[0], 10_000, { message: 'attempt 1' });
  refile = job.id;
  await worker.reply(first.request, JobStatus.FAILED_RETRYABLE);
  await waitFor(() => refile === null, 10_000, { message: 'the entry listed, then re-filed 30 s on' });
  // Two more listings: the pass that read the old entry is over.
  const seen = listings;
  await waitFor(() => listings >= seen + 2, 10_000, { message: 'two more replayer passes' });
  // Before: the stale pass removed the re-filed entry and sent attempt 2 at once.
  expect(worker.count(job.id)).toBe(1);
  expect(Number(await rig.redis.zscore(jobKeys.retry(), job.id))).toBeGreaterThan(Date.now() + 20_000);
  expect((await rig.job(job.id)).state).toBe('RETRYING');
});
