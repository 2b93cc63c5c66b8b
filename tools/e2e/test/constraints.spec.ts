// P70 and P71 end to end: policy rules with `max_concurrent_jobs` and `max_artifact_bytes` in the
// real safety kernel's file, the real scheduler enforcing them, two echo workers that could run
// every job at once. The jobs' own timestamps show how many were out at once; the workers' exec
// logs count executions.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@cordum/testing';
import { api, pool, policyFile, startStack, type Stack } from './stack';

const POLICY = `version: 1
default_decision: allow
rules:
  - id: serial-lane
    match: { topics: ["job.echo"], labels: { lane: serial } }
    decision: allow_with_constraints
    reason: two at a time
    constraints: { max_concurrent_jobs: 2 }
`;
const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'DENIED']);

/** The most intervals [from, to] that overlap at one instant. */
function maxOverlap(intervals: [number, number][]): number {
  const edges = intervals.flatMap(([a, b]) => [[a, 1], [b, -1]] as [number, number][]);
  // An end before a start at the same millisecond: a slot given back, then taken.
  edges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of edges) max = Math.max(max, (now += d));
  return max;
}

describe('max_concurrent_jobs end to end (P70)', () => {
  let stack: Stack;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordum-e2e-constraints-'));
    const policyPath = policyFile(dir, POLICY);
    stack = await startStack({ workers: 2, workerEnv: { WORKER_ECHO_DELAY: '300ms' }, kernelEnv: { SAFETY_POLICY_PATH: policyPath } });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const terminal = (id: string) =>
    waitFor(async () => {
      const r = await api(stack, 'GET', `/api/v1/jobs/${id}`);
      return r.status === 200 && TERMINAL.has(r.body['state'] as string) ? r.body : null;
    }, 60_000, { intervalMs: 100, message: `job ${id} terminal` });

  it('never more than two of the rule\'s jobs out at once, each run once; jobs outside the rule are not held up', async () => {
    const submit = (labels: Record<string, string>) => async (i: number) => {
      const r = await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: `p${i}`, labels });
      expect(r.status).toBe(200);
      return r.body['job_id'] as string;
    };
    const [serial, free] = await Promise.all([
      pool(Array.from({ length: 8 }, (_, i) => i), 8, submit({ lane: 'serial' })),
      pool(Array.from({ length: 8 }, (_, i) => i), 8, submit({ lane: 'free' })),
    ]);
    const serialJobs = await pool(serial, 8, terminal);
    const freeJobs = await pool(free, 8, terminal);
    const window = (j: Record<string, unknown>): [number, number] => [Date.parse(j['dispatched_at'] as string), Date.parse(j['finished_at'] as string)];
    for (const j of [...serialJobs, ...freeJobs]) expect(j['state']).toBe('SUCCEEDED');
    for (const j of serialJobs) expect(j['concurrency']).toEqual({ group: 'default/serial-lane', limit: 2 });
    for (const j of freeJobs) expect(j['concurrency']).toBeUndefined();
    // The limit held: at most two out at once (dispatched_at comes after the slot is taken, finished_at before it is given back).
    expect(maxOverlap(serialJobs.map(window))).toBeLessThanOrEqual(2);
    expect(maxOverlap(serialJobs.map(window))).toBe(2);
    // The unconstrained jobs ran side by side (the workers take 32 each), so the limit is the rule's, not the workers'.
    expect(maxOverlap(freeJobs.map(window))).toBeGreaterThan(2);
    const executions = stack.executions();
    for (const id of [...serial, ...free]) expect({ id, n: executions.get(id) }).toEqual({ id, n: 1 });
  });

  it('an echo result over max_artifact_bytes (a rule added as a live bundle, as the README shows) ends FAILED artifact_too_large with a DLQ entry and no result; a small one succeeds', async () => {
    const rule = { id: 'small-output', match: { topics: ['job.echo'], labels: { out: 'small' } }, decision: 'allow_with_constraints', reason: 'outputs stay small', constraints: { max_artifact_bytes: 2000 } };
    expect((await api(stack, 'PUT', '/api/v1/config', { safety: { bundles: { limits: { rules: [rule] } } } })).status).toBe(204);
    const applied = await waitFor(async () => {
      const r = await api(stack, 'POST', '/api/v1/policy/explain', { topic: 'job.echo', labels: { out: 'small' } });
      return r.body['rule_id'] === 'small-output' ? r.body : null;
    }, 15_000, { intervalMs: 100, message: 'bundle rule applied' });
    expect(applied).toMatchObject({ decision: 'allow_with_constraints', constraints: { max_artifact_bytes: 2000 } });
    const submit = async (prompt: string) => {
      const r = await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt, labels: { out: 'small' } });
      expect(r.status).toBe(200);
      return r.body['job_id'] as string;
    };
    const [big, small] = await Promise.all([submit('x'.repeat(3_000)), submit('short')]);
    const b = await terminal(big);
    expect(b['state']).toBe('FAILED');
    expect(b['error']).toMatchObject({ code: 'artifact_too_large' });
    expect(b['result']).toBeNull();
    expect(b['result_ptr']).toBeNull();
    const dlq = await waitFor(async () => {
      const r = await api(stack, 'GET', '/api/v1/dlq');
      return (r.body['items'] as { job_id: string; reason_code: string }[]).find((e) => e.job_id === big);
    }, 10_000, { message: 'DLQ entry' });
    expect(dlq.reason_code).toBe('artifact_too_large');
    const s = await terminal(small);
    expect(s['state']).toBe('SUCCEEDED');
    expect((s['result'] as { echo: string }).echo).toBe('short');
    const executions = stack.executions();
    for (const id of [big, small]) expect({ id, n: executions.get(id) }).toEqual({ id, n: 1 });
  });
});
