// Issue 6, "done when": 20 concurrent submits with one Idempotency-Key split
// over two gateway processes create one job, and the workers' own exec logs
// show it ran exactly once (D25).
import { waitFor } from '@cordum/testing';
import { api, startStack, type Stack } from './stack';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ workers: 2, gateways: 2 });
}, 180_000);
afterAll(async () => {
  await stack?.stop();
});

async function succeeded(id: string): Promise<Record<string, unknown>> {
  return waitFor(async () => {
    const j = (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body;
    return j['state'] === 'SUCCEEDED' ? j : null;
  }, 30_000, { intervalMs: 100, message: `job ${id} SUCCEEDED` });
}

it('20 concurrent submits with one Idempotency-Key over two gateways → one job, one execution', async () => {
  const body = { topic: 'job.echo', prompt: 'charge the card once', context: { amount: 42 } };
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) => api({ gatewayUrl: stack.gatewayUrls[i % 2]! }, 'POST', '/api/v1/jobs', body, { 'Idempotency-Key': 'e2e-charge-1' })),
  );
  expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
  const ids = new Set(answers.map((a) => a.body['job_id']));
  expect(ids.size).toBe(1);
  const id = String([...ids][0]);
  const done = await succeeded(id);
  expect((done['result'] as { echo: string }).echo).toBe('charge the card once');

  // A later job on the same path finishing proves the run had time to show any duplicate.
  const barrier = String((await api(stack, 'POST', '/api/v1/jobs', { topic: 'job.echo', prompt: 'barrier' })).body['job_id']);
  await succeeded(barrier);
  const listed = (await api(stack, 'GET', '/api/v1/jobs?limit=500')).body['items'] as { id: string }[];
  expect(listed.map((j) => j.id).sort()).toEqual([id, barrier].sort());
  const ex = stack.executions();
  expect(ex.get(id)).toBe(1);
  expect([...ex.values()].reduce((a, n) => a + n, 0)).toBe(2);
  // A replay after the fact answers with the same job, on either gateway, and runs nothing new.
  for (const url of stack.gatewayUrls) {
    const again = await api({ gatewayUrl: url }, 'POST', '/api/v1/jobs', body, { 'Idempotency-Key': 'e2e-charge-1' });
    expect(again.body['job_id']).toBe(id);
  }
  expect(stack.executions().get(id)).toBe(1);
}, 90_000);
