// A cancel lost to a NATS outage (decisions.md P52, P127, P134), with real processes: NATS is
// killed while a job runs, the job is cancelled through the API (CANCELLED is committed, the
// gateway's JobCancel cannot be published), and NATS comes back on the same port and store.
// - worker-sdk's echo worker, which never heard the cancel, reports the job's progress at its next
//   heartbeat; the scheduler answers with the attempt's JobCancel (P127), or the replayer leader
//   sends the cancel the gateway left owed (P134), whichever comes first, and the worker stops
//   the job. Before P127 the worker ran it to the end (here 120 s) unless someone cancelled it again.
// - a CAP worker that sends heartbeats and nothing else (CONTRACT §3: no handshake, no progress)
//   gets no P127 resend; the owed cancel reaches it (P134). Before P134 it never heard one.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { create, decodePacket, encodePacket, HeartbeatSchema, newPacket, type JobCancel } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { api, quietLog, stackMetric, startStack, type Stack } from '../test/stack';

const PUBLISH_FAILED = 'cancel publish failed; job is CANCELLED, and the schedulers send the JobCancel once the bus is back';
/** Long enough that only a cancel ends it within the test. */
const ECHO_MS = 120_000;

describe('a cancel whose JobCancel was lost to a NATS outage', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ workers: 1, workerEnv: { WORKER_ECHO_DELAY: `${ECHO_MS}ms`, WORKER_MAX_PARALLEL: '1' } });
  }, 180_000);
  afterAll(async () => {
    await stack?.stop();
  });

  const logged = (name: string, msg: string, jobId: string): boolean =>
    stack.grepLogs(`"msg":"${msg}"`).some((l) => l.startsWith(`${name}: `) && l.includes(`"job_id":"${jobId}"`));

  it('reaches the worker once NATS is back: the scheduler sends it again at the worker\'s next progress', async () => {
    const id = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'long task' })).body['job_id']);
    await waitFor(async () => stack.executions().get(id) === 1, 30_000, { message: 'the worker started the job', intervalMs: 50 });
    await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'RUNNING', 10_000, { message: 'RUNNING', intervalMs: 50 });

    stack.nats.process.kill('SIGKILL');
    await stack.nats.process.waitExit(5_000);
    const c = await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'operator stop' });
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ id, state: 'CANCELLED' });
    // The line is written before the answer, and reaches its log file through a pipe a moment later.
    await waitFor(() => logged('api-gateway-1', PUBLISH_FAILED, id), 5_000, { message: 'the gateway logged the failed publish', intervalMs: 50 });

    await stack.restartNode('nats');
    const backAt = Date.now();
    // Reconnect (≤ 2 s), then the worker's next heartbeat (5 s) carries the job's progress.
    await waitFor(() => logged('echo-1', 'job cancel received', id), 30_000, { message: 'the worker heard the JobCancel', intervalMs: 100 });
    console.log(`[lost cancel] the worker heard the JobCancel ${Date.now() - backAt} ms after NATS was back`);

    // The job stays CANCELLED and ran once, and its slot is free: with WORKER_MAX_PARALLEL 1 the
    // next job starts at once, from its submit. The scheduler counts the worker's CANCELLED answer
    // as a freed slot; before, the worker looked full until its next heartbeat, the submit was
    // NAKed as overload until its deliveries ran out, and the job waited 30 s for the replayer.
    const job = (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body;
    expect(job).toMatchObject({ state: 'CANCELLED', error: { code: 'cancelled', message: 'operator stop' } });
    expect(stack.executions().get(id)).toBe(1);
    const next = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'next' })).body['job_id']);
    const submittedAt = Date.now();
    await waitFor(async () => stack.executions().get(next) === 1, 30_000, { message: 'the next job started', intervalMs: 50 });
    console.log(`[lost cancel] the next job started ${Date.now() - submittedAt} ms after its submit`);
    expect(Date.now() - submittedAt).toBeLessThan(15_000);
    expect(stack.grepLogs(next).filter((l) => l.includes('orphan job replayed'))).toEqual([]);
    expect((await api(stack, 'POST', `/api/v1/jobs/${next}/cancel`, {})).status).toBe(200);
  }, 120_000);

  it('reaches a CAP worker that sends no progress: the replayer leader sends the cancel the gateway left owed (P134)', async () => {
    const RAW = 'raw-cap-1';
    const TOPIC = 'job.raw-cap';
    const raw: Bus = await connectBus({ servers: stack.natsUrls, name: RAW, logger: quietLog });
    const requests: string[] = [];
    const heard: { cancel: JobCancel; at: number }[] = [];
    const onRequest = (data: Uint8Array): void => {
      const p = decodePacket(data);
      if (p.payload.case === 'jobRequest') requests.push(p.payload.value.jobId);
    };
    raw.subscribe(TOPIC, onRequest, { queue: TOPIC });
    raw.subscribe(`worker.${RAW}.jobs`, onRequest);
    raw.subscribe(subjects.cancel, (data) => {
      const p = decodePacket(data);
      if (p.payload.case === 'jobCancel') heard.push({ cancel: p.payload.value, at: Date.now() });
    });
    // Heartbeats only: its pool is the topic (config/pools.yaml routes an unlisted topic so).
    const beat = (): void => {
      try {
        raw.publishCore(subjects.heartbeat, encodePacket(newPacket(RAW, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: RAW, pool: TOPIC, maxParallelJobs: 10, activeJobs: requests.length }) })));
      } catch {
        // NATS away: the next beat goes once it is back
      }
    };
    beat();
    const timer = setInterval(beat, 1_000);
    try {
      const id = String((await api(stack, 'POST', '/api/v1/jobs', { topic: TOPIC, prompt: 'never answered' })).body['job_id']);
      await waitFor(() => requests.includes(id), 30_000, { message: 'the CAP worker got the job', intervalMs: 50 });
      await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'DISPATCHED', 10_000, { message: 'DISPATCHED', intervalMs: 50 });
      const sentBefore = await stackMetric(stack, 'scheduler-1', 'cordum_scheduler_owed_cancels_total', { outcome: 'sent' });

      stack.nats.process.kill('SIGKILL');
      await stack.nats.process.waitExit(5_000);
      const cancelledAt = Date.now();
      expect((await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'stop the agent' })).status).toBe(200);
      await waitFor(() => logged('api-gateway-1', PUBLISH_FAILED, id), 5_000, { message: 'the gateway logged the failed publish', intervalMs: 50 });
      await stack.restartNode('nats');

      // Nobody cancels again and the worker reports nothing: only the owed cancel can reach it.
      await waitFor(() => heard.some((h) => h.cancel.jobId === id), 45_000, { message: 'the CAP worker heard the JobCancel', intervalMs: 100 });
      const at = heard.find((h) => h.cancel.jobId === id)?.at ?? 0;
      console.log(`[owed cancel] the CAP worker heard the JobCancel ${at - cancelledAt} ms after the cancel`);
      expect(heard.find((h) => h.cancel.jobId === id)?.cancel).toMatchObject({ jobId: id, reason: 'stop the agent' });
      // Counted once the publish and the entry's removal are done, a moment after the worker can hear it.
      await waitFor(async () => (await stackMetric(stack, 'scheduler-1', 'cordum_scheduler_owed_cancels_total', { outcome: 'sent' })) > sentBefore, 5_000, { message: 'counted as sent', intervalMs: 100 });
      expect((await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state']).toBe('CANCELLED');
      expect(requests.filter((r) => r === id)).toHaveLength(1);
    } finally {
      clearInterval(timer);
      await raw.close();
    }
  }, 120_000);
});
