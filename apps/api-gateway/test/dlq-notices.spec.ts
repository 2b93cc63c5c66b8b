// sys.job.dlq (CONTRACT §3, D14): the gateway publishes the notice after the DLQ
// write it makes itself (a job denied at submit), and its durable consumer
// `cordum-gateway` files the entry of a notice whose entry is missing, while
// notices for unknown jobs or jobs outside a DLQ state change nothing.
import { randomUUID } from 'node:crypto';
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { createJobStore, dlqMsgId, dlqPacket, jobKeys, type JobRecord, type JobStore } from '@cordum/job-store';
import { createLocks, type Locks } from '@cordum/locks';
import { decodePacket, encodePacket, JobStatus, type BusPacket } from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger } from '@cordum/service-kit';
import { waitFor } from '@cordum/testing';
import { KEYS, call, startRig, type Rig } from './harness';

let rig: Rig;
let redis: RedisClient;
let store: JobStore;
let locks: Locks;
let bus: Bus;
const notices: BusPacket[] = [];

beforeAll(async () => {
  rig = await startRig();
  redis = createRedis({ url: rig.redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 1 });
  // No onDlq here: what the test itself writes publishes nothing.
  store = createJobStore(redis, { jobTtlMs: 60_000 });
  locks = createLocks(redis);
  bus = await connectBus({ servers: [rig.nats.url], name: 'dlq-notice-test', logger: createLogger({ service: 't', instance: 't', level: 'error', write: () => undefined }) });
  bus.subscribe(subjects.dlq, (data) => notices.push(decodePacket(data)));
  await bus.flush();
});
afterAll(async () => {
  await bus.close();
  await closeRedis(redis);
  await rig.stop();
});

async function counted(outcome: string): Promise<number> {
  const text = await (await fetch(`${rig.url}/metrics`)).text();
  const m = new RegExp(`^cordum_dlq_notices_total\\{[^}]*outcome="${outcome}"[^}]*\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function submit(topic: string): Promise<{ status: number; id: string }> {
  const r = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic } });
  return { status: r.status, id: String(r.body['job_id']) };
}

async function failJob(id: string): Promise<void> {
  const lease = await locks.acquire({ key: jobKeys.lock(id), fenceKey: jobKeys.fence(id), ttlMs: 10_000, owner: 'test', waitMs: 2_000 });
  if (!lease) throw new Error('lock');
  const r = await store.transition(id, 'FAILED', { token: lease.token, patch: { error: { code: 'worker_error', message: 'boom' } } });
  await lease.release();
  if (!r.ok) throw new Error(`fail ${id}: ${r.reason}`);
}

/** A notice as another CAP component would publish it (its own message id). */
async function publishNotice(job: JobRecord): Promise<void> {
  const entry = { job_id: job.id, tenant: job.tenant, topic: job.topic, reason: 'worker crashed', reason_code: 'worker_error', last_state: job.state, attempts: 1, created_at: new Date().toISOString() };
  await bus.publish(subjects.dlq, encodePacket(dlqPacket('cap-tool', job, entry)), { msgId: `${dlqMsgId(job)}:${randomUUID()}` });
}

async function record(id: string): Promise<JobRecord> {
  const job = await store.getJob(id);
  if (!job) throw new Error(`no record for ${id}`);
  return job;
}

describe('sys.job.dlq', () => {
  it('publishes the notice of a job denied at submit, which its consumer finds already filed', async () => {
    const present = await counted('present');
    const { status, id } = await submit('job.deny.drop-table');
    expect(status).toBe(403);
    const notice = await waitFor(() => notices.find((p) => p.payload.case === 'jobResult' && p.payload.value.jobId === id), 5_000, { message: 'dlq notice' });
    expect(notice.senderId).toBe('gw-test');
    if (notice.payload.case !== 'jobResult') throw new Error('not a JobResult');
    expect(notice.payload.value.status).toBe(JobStatus.DENIED);
    expect(notice.payload.value.errorCode).toBe('policy_denied');
    expect(notice.payload.value.errorMessage).toBe('destructive operations are not allowed');
    await waitFor(async () => (await counted('present')) === present + 1, 5_000, { message: 'consumer saw the notice' });
    expect((await store.getDlq(id))?.reason_code).toBe('policy_denied');
  });

  it('files the entry of a FAILED job whose entry is missing', async () => {
    const filed = await counted('filed');
    const { id } = await submit('job.ok.lost-entry');
    await failJob(id);
    await redis.del(jobKeys.dlqEntry(id));
    expect(await store.getDlq(id)).toBeNull();
    await publishNotice(await record(id));
    const entry = await waitFor(() => store.getDlq(id), 5_000, { message: 'entry filed' });
    expect(entry).toMatchObject({ job_id: id, tenant: 'acme', reason_code: 'worker_error', last_state: 'FAILED' });
    expect(await counted('filed')).toBe(filed + 1);
    const list = await call(rig.url, 'GET', '/api/v1/dlq', { key: KEYS.operator });
    expect((list.body['items'] as { job_id: string }[]).map((e) => e.job_id)).toContain(id);
  });

  it('acks notices for an unknown job or a job outside a DLQ state and changes nothing', async () => {
    const [unknown, notDlq] = [await counted('unknown_job'), await counted('not_dlq_state')];
    const { id } = await submit('job.ok.still-pending');
    const pending = await record(id);
    expect(pending.state).toBe('PENDING');
    const ghost = randomUUID();
    await publishNotice({ ...pending, id: ghost, state: 'FAILED' });
    await publishNotice(pending);
    await waitFor(async () => (await counted('unknown_job')) === unknown + 1 && (await counted('not_dlq_state')) === notDlq + 1, 5_000, { message: 'both counted' });
    expect(await store.getDlq(ghost)).toBeNull();
    expect(await store.getDlq(id)).toBeNull();
    expect((await store.getJob(id))?.state).toBe('PENDING');
  });
});
