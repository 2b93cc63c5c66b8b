// P308: a cancel reads the job before it takes the job lock. When the job ended in between
// (another cancel whose worker has already answered, a TIMEOUT), the request filed the job's
// cancel outbox entry anyway, then its write was refused (409 job_terminal) and the entry stayed:
// the schedulers sent the stopped worker a JobCancel for 10 minutes. The replica's job store is
// wrapped so the other cancel lands, and its worker's answer clears the entry, right after this
// request's read.
import { CANCEL_OWED_AFTER_MS, jobKeys, type JobStore } from '@cordum/job-store';
import { clusterNow } from '@cordum/redis';
import { KEYS, call, expectEnvelope, rigClients, runJobAsScheduler, startRig, type Rig, type RigClients } from './harness';

let rig: Rig;
let clients: RigClients;
let raceOn: string | null = null;

/** After the request's read of `raceOn`: another replica cancels it and its worker answers. */
const endAfterRead = (store: JobStore): JobStore => ({
  ...store,
  async getJob(id) {
    const job = await store.getJob(id);
    if (id === raceOn) {
      raceOn = null;
      const lease = await clients.locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'other-replica', waitMs: 2_000 });
      await clients.store.fileCancel(id, clusterNow() + CANCEL_OWED_AFTER_MS);
      const w = await clients.store.transition(id, 'CANCELLED', { token: lease!.token, patch: { error: { code: 'cancelled', message: 'first' } } });
      if (!w.ok) throw new Error(`the other cancel was refused: ${w.reason}`);
      await lease!.release();
      await clients.store.removeCancel(id); // its worker answered CANCELLED: nothing owed
    }
    return job; // what the request read before the other cancel
  },
});

beforeAll(async () => {
  rig = await startRig({}, { deps: { wrapStore: endAfterRead } });
  clients = await rigClients(rig, 'cancel-race');
});
afterAll(async () => {
  await clients?.close();
  await rig.stop();
});

it('a cancel whose job ended between its read and its lock answers 409 job_terminal and leaves nothing owed in the cancel outbox', async () => {
  const sub = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic: 'job.echo' } });
  const id = String(sub.body['job_id']);
  await runJobAsScheduler(clients.store, clients.locks, id);

  raceOn = id;
  const res = await call(rig.url, 'POST', `/api/v1/jobs/${id}/cancel`, { key: KEYS.operator, body: { reason: 'second' } });
  expect(raceOn).toBeNull(); // the other cancel ran after this request's read
  expectEnvelope(res, 409, 'job_terminal');
  expect(await clients.redis.zscore(jobKeys.cancelOutbox(), id)).toBeNull();
});
