// Issue 3 item 6 / BEHAVIOURS §1.6 / D5 with real processes: cancelling a
// running job makes it CANCELLED at once, the worker gets one JobCancel and
// aborts its handler, the worker's CANCELLED result is ignored (terminal), the
// job is never redispatched, and a second cancel answers 409 job_terminal.
import { waitFor } from '@cordum/testing';
import { api, startStack, type Stack } from './stack';

let stack: Stack;

beforeAll(async () => {
  // Every echo takes 20 s unless cancelled: long enough to cancel it mid-run. One job at a time,
  // so the next job can start only once the cancelled handler has given its slot back.
  stack = await startStack({ workers: 1, gateways: 2, workerEnv: { WORKER_ECHO_DELAY: '20s', WORKER_MAX_PARALLEL: '1' } });
}, 180_000);
afterAll(async () => {
  await stack?.stop();
});

function logLines(name: string, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stack.procs.get(name)!.output) {
    if (!line.startsWith('{')) continue;
    try {
      const l = JSON.parse(line) as Record<string, unknown>;
      if (l['msg'] === msg) out.push(l);
    } catch {
      // not a log line
    }
  }
  return out;
}

it('cancel of a running job: CANCELLED at once, the worker aborts, no redispatch, a second cancel is 409', async () => {
  const id = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'long task' })).body['job_id']);
  await waitFor(async () => stack.executions().get(id) === 1, 30_000, { message: 'the worker started the job', intervalMs: 50 });
  await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body['state'] === 'RUNNING', 10_000, { message: 'RUNNING', intervalMs: 50 });

  // Cancel through the second gateway (any replica may take it).
  const c = await api({ gatewayUrl: stack.gatewayUrls[1]! }, 'POST', `/api/v1/jobs/${id}/cancel`, { reason: 'operator stop' });
  expect(c.status).toBe(200);
  expect(c.body).toMatchObject({ id, state: 'CANCELLED' });

  // The worker receives the JobCancel for this dispatch and reports CANCELLED long before the 20 s echo ends.
  await waitFor(async () => logLines('echo-1', 'job cancel received').some((l) => l['job_id'] === id), 5_000, { message: 'worker got the JobCancel', intervalMs: 50 });
  expect(logLines('echo-1', 'job cancel received').filter((l) => l['job_id'] === id)).toHaveLength(1);

  // A job submitted after the cancel runs and finishes on the same worker: by then the CANCELLED
  // result of the first job has been through the scheduler, which must have ignored it. The
  // worker runs one job at a time: the next one starting well inside the cancelled echo's 20 s
  // proves its handler was aborted (the log line above is written before the abort).
  const next = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'after cancel' })).body['job_id']);
  await waitFor(async () => stack.executions().get(next) === 1, 10_000, { message: "the next job took the slot the aborted handler gave back (a handler not aborted holds it for the echo's 20 s)", intervalMs: 50 });
  await waitFor(async () => (await api(stack, 'GET', `/api/v1/jobs/${next}`)).body['state'] === 'SUCCEEDED', 60_000, { message: 'next job SUCCEEDED', intervalMs: 200 });

  const job = (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body;
  expect(job['state']).toBe('CANCELLED');
  expect(job['error']).toMatchObject({ code: 'cancelled', message: 'operator stop' });
  expect(stack.executions().get(id)).toBe(1);

  const again = await api(stack, 'POST', `/api/v1/jobs/${id}/cancel`, {});
  expect(again.status).toBe(409);
  expect(again.body).toMatchObject({ code: 'job_terminal', state: 'CANCELLED' });
}, 120_000);
