// sys.job.dlq (CONTRACT §3, D14): the gateway publishes the notice after the DLQ
// write it makes itself (a job denied at submit), and its durable consumer
// `cordum-gateway` files the entry of a notice whose entry is missing, while
// notices for unknown jobs or jobs outside a DLQ state change nothing.
import { randomUUID } from 'node:crypto';
import { subjects, type Bus } from '@cordum/bus';
import { dlqMsgId, dlqPacket, jobKeys, type JobRecord, type JobStore } from '@cordum/job-store';
import { decodePacket, encodePacket, JobStatus, type BusPacket } from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';
import { waitFor } from '@cordum/testing';
import { KEYS, call, metric, rigClients, startRig, type Rig, type RigClients } from './harness';

let rig: Rig;
let clients: RigClients;
let redis: RedisClient;
let store: JobStore;
let bus: Bus;
const notices: BusPacket[] = [];

beforeAll(async () => {
  rig = await startRig();
  clients = await rigClients(rig, 'dlq-notice-test');
  ({ redis, store, bus } = clients);
  bus.subscribe(subjects.dlq, (data) => notices.push(decodePacket(data)));
  await bus.flush();
});
afterAll(async () => {
  await clients?.close();
  await rig.stop();
});

const counted = async (outcome: string): Promise<number> => (await metric(rig.url, 'cordum_dlq_notices_total', `outcome="${outcome}"`)) ?? 0;

async function submit(topic: string): Promise<{ status: number; id: string }> {
  const r = await call(rig.url, 'POST', '/api/v1/jobs', { key: KEYS.operator, body: { prompt: 'p', topic } });
  return { status: r.status, id: String(r.body['job_id']) };
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
  it('exports every outcome from 0 before the first notice, so the alert sees the first unexpected one (P296)', async () => {
    const text = await (await fetch(`${rig.url}/metrics`)).text();
    for (const outcome of ['present', 'filed', 'unknown_job', 'not_dlq_state']) expect(text).toMatch(new RegExp(`^cordum_dlq_notices_total\\{[^}]*outcome="${outcome}"[^}]*\\} 0$`, 'm'));
  });

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
    await clients.failJob(id);
    await redis.del(jobKeys.dlqEntry(id));
    expect(await store.getDlq(id)).toBeNull();
    await publishNotice(await record(id));
    const entry = await waitFor(() => store.getDlq(id), 5_000, { message: 'entry filed' });
    expect(entry).toMatchObject({ job_id: id, tenant: 'acme', reason_code: 'worker_error', last_state: 'FAILED' });
    // counted once the write has answered, after the entry is visible: wait for it, then exact
    await waitFor(async () => (await counted('filed')) >= filed + 1, 5_000, { message: 'filed counted' });
    expect(await counted('filed')).toBe(filed + 1);
    const list = await call(rig.url, 'GET', '/api/v1/dlq', { key: KEYS.operator });
    expect((list.body['items'] as { job_id: string }[]).map((e) => e.job_id)).toContain(id);
  });

  it('does not bring back an entry an admin deleted when a notice for it comes late (P22)', async () => {
    const present = await counted('present');
    const { id } = await submit('job.ok.deleted-entry');
    await clients.failJob(id);
    const del = await call(rig.url, 'DELETE', `/api/v1/dlq/${id}`, { key: KEYS.admin });
    expect(del.status).toBe(204);
    await publishNotice(await record(id));
    await waitFor(async () => (await counted('present')) >= present + 1, 5_000, { message: 'consumer saw the late notice' });
    expect(await store.getDlq(id)).toBeNull();
    expect(await redis.zscore(jobKeys.dlqIndexTenant('acme'), id)).toBeNull();
  });

  // P328: the consumer decoded without CAP's checks (P57) and filed the notice's reason uncut.
  it('terminates a notice that breaks CAP\'s rules (protocol_version 2) without filing it, and cuts a notice\'s reason to 4,096 characters', async () => {
    const bad = (await submit('job.ok.bad-notice')).id;
    const long = (await submit('job.ok.long-notice')).id;
    for (const id of [bad, long]) {
      await clients.failJob(id);
      await redis.del(jobKeys.dlqEntry(id));
    }
    const undecodable = (await metric(rig.url, 'cordum_bus_undecodable_total', `subject="${subjects.dlq}"`)) ?? 0;
    const badJob = await record(bad);
    const entry = { job_id: bad, tenant: 'acme', topic: badJob.topic, reason: 'x', reason_code: 'worker_error', last_state: 'FAILED' as const, attempts: 1, created_at: new Date().toISOString() };
    const packet = dlqPacket('cap-tool', badJob, entry);
    packet.protocolVersion = 2;
    await bus.publish(subjects.dlq, encodePacket(packet), { msgId: `${dlqMsgId(badJob)}:${randomUUID()}` });
    // Three deliveries a second apart, then terminated (undecodable, counted).
    await waitFor(async () => ((await metric(rig.url, 'cordum_bus_undecodable_total', `subject="${subjects.dlq}"`)) ?? 0) === undecodable + 1, 15_000, { message: 'bad notice terminated' });
    expect(await store.getDlq(bad)).toBeNull();

    const longJob = await record(long);
    const longEntry = { ...entry, job_id: long, topic: longJob.topic, reason: 'é'.repeat(100_000) };
    await bus.publish(subjects.dlq, encodePacket(dlqPacket('cap-tool', longJob, longEntry)), { msgId: `${dlqMsgId(longJob)}:${randomUUID()}` });
    const filed = await waitFor(() => store.getDlq(long), 5_000, { message: 'long notice filed' });
    expect(filed.reason).toHaveLength(4_096);
    expect(filed.reason.endsWith('…')).toBe(true);
  }, 30_000);

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
