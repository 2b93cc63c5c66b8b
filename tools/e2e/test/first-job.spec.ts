// Issue 2, "done when": real gateway, scheduler, safety kernel and two echo
// workers as processes; jobs travel HTTP → JetStream → scheduler → kernel →
// worker → result → HTTP, and the workers' own logs prove exactly-once.
import { waitFor } from '@cordum/testing';
import { api, pool, startStack, type Stack } from './stack';

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'DENIED']);

describe('first job end to end', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ workers: 2 });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('runs 200 jobs submitted at concurrency 20, each exactly once, results readable', async () => {
    const prompts = Array.from({ length: 200 }, (_, i) => `hello ${i}`);
    const ids = await pool(prompts, 20, async (prompt) => {
      const res = await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt, context: { n: prompt } });
      expect(res.status).toBe(200);
      expect(typeof res.body['job_id']).toBe('string');
      expect(typeof res.body['trace_id']).toBe('string');
      return { id: res.body['job_id'] as string, prompt };
    });
    expect(new Set(ids.map((j) => j.id)).size).toBe(200);

    const finals = await pool(ids, 20, async ({ id }) =>
      waitFor(async () => {
        const res = await api(stack, 'GET', `/api/v1/jobs/${id}`);
        return res.status === 200 && TERMINAL.has(res.body['state'] as string) ? res.body : null;
      }, 60_000, { intervalMs: 100, message: `job ${id} terminal` }),
    );
    for (const [i, job] of finals.entries()) {
      expect(job['state']).toBe('SUCCEEDED');
      expect(job['id']).toBe(ids[i]!.id);
      expect(job['topic']).toBe('job.echo');
      expect(job['result_ptr']).toBe(`redis://res:${ids[i]!.id}`);
      expect((job['result'] as { echo: string }).echo).toBe(ids[i]!.prompt);
      expect(stack.workerIds).toContain(job['worker_id']);
    }

    const executions = stack.executions();
    expect(executions.size).toBe(200);
    for (const { id } of ids) expect({ id, n: executions.get(id) }).toEqual({ id, n: 1 });
  });

  it('answers bad input on both routes with a 4xx JSON error, never 5xx', async () => {
    const cases: [string, string, unknown, Record<string, string>?][] = [
      ['POST', '/api/v1/jobs', { topic: 'echo', prompt: 'x' }],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x'.repeat(50_001) }],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x', priority: 'urgent' }],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x', labels: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v'])) }],
      ['POST', '/api/v1/jobs', '{"topic": "job.echo", '],
      ['POST', '/api/v1/jobs', '[1,2,3]'],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x'.repeat(3 * 1024 * 1024) }],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x' }, { 'X-API-Key': 'wrong' }],
      ['POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'x', tenant_id: 'someone-else' }],
      ['GET', '/api/v1/jobs/does-not-exist', undefined],
      ['GET', '/api/v1/jobs/%00%ff', undefined],
      ['GET', '/api/v1/jobs/x', undefined, { 'X-API-Key': '' }],
    ];
    for (const [method, path, body, headers] of cases) {
      const res = await api(stack, method, path, body, headers);
      const summary = { method, path, status: res.status };
      expect(res.status >= 400 && res.status < 500 ? 'client error' : summary).toBe('client error');
      expect(typeof res.body['error']).toBe('string');
      expect(typeof res.body['code']).toBe('string');
      expect(res.body['status']).toBe(res.status);
    }
  });

  it('keeps every service ready after the load', async () => {
    for (const [name, proc] of stack.procs) expect({ name, running: proc.running }).toEqual({ name, running: true });
  });
});
