// A cancel lost to a NATS outage (decisions.md P52, P127), with real processes: NATS is killed
// while a job runs, the job is cancelled through the API (CANCELLED is committed, the gateway's
// JobCancel cannot be published), and NATS comes back on the same port and store. The worker,
// which never heard the cancel, reports the job's progress at its next heartbeat; the scheduler
// answers with the attempt's JobCancel, and the worker stops the job. Before P127 the worker ran
// it to the end (here 120 s) unless someone cancelled it again.
import { waitFor } from '@cordum/testing';
import { api, startStack, type Stack } from '../test/stack';

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
    expect(logged('api-gateway-1', 'cancel publish failed; job is CANCELLED but the worker was not told (cancel it again to resend)', id)).toBe(true);

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
});
