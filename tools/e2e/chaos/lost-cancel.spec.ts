// A cancel lost to a NATS outage (decisions.md P52, P127, P134), with real processes: NATS is
// killed while a job runs, the job is cancelled through the API (CANCELLED is committed, the
// gateway's JobCancel cannot be published), and NATS comes back on the same port and store.
// - worker-sdk's echo worker, which never heard the cancel, reports the job's progress at its next
//   heartbeat; the scheduler answers with the attempt's JobCancel (P127), or the replayer leader
//   sends the cancel the gateway left owed (P134), whichever comes first, and the worker stops
//   the job. Before P127 the worker ran it to the end (here 120 s) unless someone cancelled it again.
// - a CAP worker that sends heartbeats and nothing else (CONTRACT §3: no handshake, no progress)
//   gets no P127 resend; the owed cancel reaches it (P134). Before P134 it never heard one.
// - such a worker cut off from NATS when the gateway's JobCancel went out (NATS up) hears it sent
//   again 10 s later, and its answer ends the resends (P135). Before P135 it never heard one.
import { connectBus, subjects, type Bus } from '@cordum/bus';
import { create, decodePacket, encodePacket, HeartbeatSchema, JobResultSchema, JobStatus, newPacket, type JobCancel } from '@cordum/protocol';
import { waitFor } from '@cordum/testing';
import { api, quietLog, stackMetric, startStack, type Stack } from '../test/stack';

const PUBLISH_FAILED = 'cancel publish failed; job is CANCELLED, and the schedulers send the JobCancel once the bus is back';
/** job-store's CANCEL_OWED_AFTER_MS (the e2e project may not import job-store): when an unanswered JobCancel is first sent again. */
const CANCEL_OWED_AFTER_MS = 10_000;
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

  /**
   * A CAP worker with heartbeats and nothing else (CONTRACT §3: no handshake, no progress): it
   * takes jobs on `topic` and hears JobCancels on a connection of its own, which `cutOff` closes
   * and `reconnect` opens again (its link to NATS down and back).
   */
  const startRawWorker = async (name: string, topic: string) => {
    const bus: Bus = await connectBus({ servers: stack.natsUrls, name, logger: quietLog });
    const requests: { jobId: string; dispatchId: string }[] = [];
    const heard: { cancel: JobCancel; at: number }[] = [];
    const onRequest = (data: Uint8Array): void => {
      const p = decodePacket(data);
      if (p.payload.case === 'jobRequest') requests.push({ jobId: p.payload.value.jobId, dispatchId: p.payload.value.dispatch?.dispatchId ?? '' });
    };
    bus.subscribe(topic, onRequest, { queue: topic });
    bus.subscribe(`worker.${name}.jobs`, onRequest);
    let ears: Bus | undefined;
    const reconnect = async (): Promise<void> => {
      ears = await connectBus({ servers: stack.natsUrls, name: `${name}-cancels`, logger: quietLog });
      ears.subscribe(subjects.cancel, (data) => {
        const p = decodePacket(data);
        if (p.payload.case === 'jobCancel') heard.push({ cancel: p.payload.value, at: Date.now() });
      });
      await ears.flush();
    };
    await reconnect();
    // Its pool is the topic (config/pools.yaml routes an unlisted topic so).
    const beat = (): void => {
      try {
        bus.publishCore(subjects.heartbeat, encodePacket(newPacket(name, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: name, pool: topic, maxParallelJobs: 10, activeJobs: requests.length }) })));
      } catch {
        // NATS away: the next beat goes once it is back
      }
    };
    beat();
    const timer = setInterval(beat, 1_000);
    return {
      requests,
      heard,
      heardFor: (jobId: string) => heard.filter((h) => h.cancel.jobId === jobId),
      reconnect,
      cutOff: async (): Promise<void> => {
        await ears?.close();
        ears = undefined;
      },
      /** Its CANCELLED answer for the job's attempt, once it stopped. */
      answer: async (jobId: string): Promise<void> => {
        const dispatchId = requests.find((r) => r.jobId === jobId)?.dispatchId ?? '';
        const value = create(JobResultSchema, { jobId, status: JobStatus.CANCELLED, workerId: name, errorCode: 'cancelled', dispatch: { dispatchId, attempt: 1n, assignedWorkerId: name } });
        await bus.publish(subjects.result, encodePacket(newPacket(name, { case: 'jobResult', value })), { msgId: `${subjects.result}:${jobId}:${dispatchId}:CANCELLED` });
      },
      stop: async (): Promise<void> => {
        clearInterval(timer);
        await ears?.close();
        await bus.close();
      },
    };
  };

  /** A job on `topic` that `worker` took (DISPATCHED: the worker sends no start ack). */
  const takenJob = async (worker: Awaited<ReturnType<typeof startRawWorker>>, topic: string, prompt: string): Promise<string> => {
    const id = String((await api(stack, 'POST', '/api/v1/jobs', { topic, prompt })).body['job_id']);
    await waitFor(() => worker.requests.some((r) => r.jobId === id), 30_000, { message: 'the CAP worker got the job', intervalMs: 50 });
    await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'DISPATCHED', 10_000, { message: 'DISPATCHED', intervalMs: 50 });
    return id;
  };
  const owed = (outcome: string) => stackMetric(stack, 'scheduler-1', 'cordum_scheduler_owed_cancels_total', { outcome });

  it('reaches a CAP worker that sends no progress: the replayer leader sends the cancel the gateway left owed (P134)', async () => {
    const TOPIC = 'job.raw-cap';
    const raw = await startRawWorker('raw-cap-1', TOPIC);
    try {
      const id = await takenJob(raw, TOPIC, 'never answered');
      const sentBefore = await owed('sent');

      stack.nats.process.kill('SIGKILL');
      await stack.nats.process.waitExit(5_000);
      const cancelledAt = Date.now();
      expect((await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'stop the agent' })).status).toBe(200);
      await waitFor(() => logged('api-gateway-1', PUBLISH_FAILED, id), 5_000, { message: 'the gateway logged the failed publish', intervalMs: 50 });
      await stack.restartNode('nats');

      // Nobody cancels again and the worker reports nothing: only the owed cancel can reach it.
      await waitFor(() => raw.heardFor(id).length > 0, 45_000, { message: 'the CAP worker heard the JobCancel', intervalMs: 100 });
      const first = raw.heardFor(id)[0]!;
      console.log(`[owed cancel] the CAP worker heard the JobCancel ${first.at - cancelledAt} ms after the cancel`);
      expect(first.cancel).toMatchObject({ jobId: id, reason: 'stop the agent' });
      // Counted once the publish and the entry's re-filing are done, a moment after the worker can hear it.
      await waitFor(async () => (await owed('sent')) > sentBefore, 5_000, { message: 'counted as sent', intervalMs: 100 });
      expect((await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state']).toBe('CANCELLED');
      expect(raw.requests.filter((r) => r.jobId === id)).toHaveLength(1);
      await raw.answer(id);
    } finally {
      await raw.stop();
    }
  }, 120_000);

  it('reaches a CAP worker that was cut off from NATS when its JobCancel went out, and stops once it answers (P135)', async () => {
    const TOPIC = 'job.raw-cut-off';
    const raw = await startRawWorker('raw-cap-2', TOPIC);
    try {
      const id = await takenJob(raw, TOPIC, 'cut off at the cancel');
      await raw.cutOff();
      const cancelledAt = Date.now();
      // NATS is up: the gateway's JobCancel goes out at once, while the worker cannot hear it.
      expect((await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'stop, cut off' })).status).toBe(200);
      await raw.reconnect();
      expect(raw.heardFor(id)).toEqual([]);

      // Nobody cancels again and the worker reports nothing: the schedulers send it again at the
      // entry's due time, 10 s after the gateway's send (before P135 nothing ever reached it).
      await waitFor(() => raw.heardFor(id).length > 0, 30_000, { message: 'the CAP worker heard the JobCancel sent again', intervalMs: 100 });
      const again = raw.heardFor(id)[0]!;
      console.log(`[owed cancel] the cut-off CAP worker heard the JobCancel ${again.at - cancelledAt} ms after the cancel`);
      expect(again.at - cancelledAt).toBeGreaterThanOrEqual(CANCEL_OWED_AFTER_MS - 100);
      expect(again.cancel).toMatchObject({ jobId: id, reason: 'stop, cut off', dispatch: { dispatchId: raw.requests.find((r) => r.jobId === id)?.dispatchId } });

      // It stops and answers CANCELLED: the schedulers stop sending it.
      const answered = await owed('answered');
      await raw.answer(id);
      await waitFor(async () => (await owed('answered')) > answered, 10_000, { message: 'the answer settled the owed cancel', intervalMs: 100 });
      expect((await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state']).toBe('CANCELLED');
      expect(raw.requests.filter((r) => r.jobId === id)).toHaveLength(1);
    } finally {
      await raw.stop();
    }
  }, 120_000);
});
