// Issue 5, "done when": the safety kernel and human approvals with real
// processes (two kernel replicas with the decision cache on, a scheduler, two
// gateways, two echo workers), executions counted from the workers' own
// WORKER_EXEC_LOG. Tests run in file order and share the stack: approvals and
// denials, Explain/Simulate against hand-computed answers for a 12-rule
// policy, a policy change through config, then the kernels killed under load
// with input_fail_mode closed and open.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, subjects, type Bus, type Consumer } from '@cordum/bus';
import { Decision, SafetyKernel, decodePacket, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { repoRoot, waitFor } from '@cordum/testing';
import { api, pool, policyFile, quietLog, stackMetric, startStack, type Stack } from './stack';

/** Rule order matters: first match wins. Every topic not named below falls to `default_decision: allow`. */
/** The 12-rule policy (shared with the Check micro-benchmark); rule order matters: first match wins. */
const POLICY = readFileSync(join(repoRoot, 'tools/bench/safety-policy.yaml'), 'utf8');

const KEYS = { alice: 'e2e-alice-operator-key', bob: 'e2e-bob-operator-key-1', carol: 'e2e-carol-operator-key' } as const;
const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'DENIED']);
type KernelClient = GrpcClient<typeof SafetyKernel extends { method: infer M } ? M : never>;

let stack: Stack;
let dir: string;
let bus: Bus;
let audit: Consumer;
const alerts: { code: string; jobId: string }[] = [];
/** Every job this file expects to have run exactly once. */
const ranOnce: string[] = [];
/** Every job this file expects never to have run. */
const neverRan: string[] = [];
/** Jobs that ran more than once by design (retries); left out of the exactly-once count. */
const retriedMany: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cordum-e2e-safety-'));
  const policyPath = policyFile(dir, POLICY);
  const keys = [
    { key: KEYS.alice, tenant: 'default', role: 'operator', principal_id: 'alice' },
    { key: KEYS.bob, tenant: 'default', role: 'operator', principal_id: 'bob' },
    { key: KEYS.carol, tenant: 'default', role: 'operator', principal_id: 'carol' },
  ];
  stack = await startStack({
    workers: 2,
    workerEnv: { WORKER_ECHO_FAULTS: 'true' }, // the fail: and retry: prompts below
    gateways: 2,
    kernels: 2,
    kernelEnv: { SAFETY_POLICY_PATH: policyPath, SAFETY_DECISION_CACHE_TTL: '60s' },
    gatewayEnv: { CORDUM_API_KEYS: JSON.stringify(keys) },
  });
  bus = await connectBus({ servers: [stack.nats.url], name: 'e2e-safety', logger: quietLog });
  audit = await bus.consume({
    subject: subjects.audit,
    queue: 'e2e-audit',
    decode: decodePacket,
    handler: async (p) => {
      if (p.payload.case === 'alert') alerts.push({ code: p.payload.value.code, jobId: p.payload.value.details['job_id'] ?? '' });
      return { kind: 'ack' };
    },
  });
}, 180_000);

afterAll(async () => {
  await audit?.stop();
  await bus?.close();
  await stack?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const gw = (i: number) => ({ gatewayUrl: stack.gatewayUrls[i] ?? '' });
const as = (key: string) => ({ 'X-API-Key': key });

async function submit(key: string, body: Record<string, unknown>, via = 0) {
  return api(gw(via), 'POST', '/api/v1/jobs', body, as(key));
}

async function job(id: string): Promise<Record<string, unknown>> {
  return (await api(stack, 'GET', `/api/v1/jobs/${id}`)).body;
}

async function terminal(id: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return waitFor(async () => {
    const j = await job(id);
    return TERMINAL.has(j['state'] as string) ? j : null;
  }, timeoutMs, { intervalMs: 100, message: `job ${id} terminal` });
}

/** Runs one allowed job to SUCCEEDED: everything submitted before it had its chance to reach a worker too. */
async function barrier(): Promise<void> {
  const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'barrier' });
  expect(r.status).toBe(200);
  const id = String(r.body['job_id']);
  expect((await terminal(id))['state']).toBe('SUCCEEDED');
  ranOnce.push(id);
}

const schedulerMetric = (name: string, labels: Record<string, string> = {}): Promise<number> => stackMetric(stack, 'scheduler-1', name, labels);

/** cordum_dlq_notices_total{outcome} summed over every gateway replica. */
const gatewayNotices = (outcome: string): Promise<number> => stackMetric(stack, 'api-gateway-', 'cordum_dlq_notices_total', { outcome });

describe('a job its worker fails', () => {
  it('ends FAILED with a DLQ entry, and one of the two gateways consumes its sys.job.dlq notice once', async () => {
    const before = await gatewayNotices('present');
    const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'fail: the tool crashed' });
    expect(r.status).toBe(200);
    const id = String(r.body['job_id']);
    expect(await terminal(id)).toMatchObject({ state: 'FAILED' });
    // The scheduler files the entry after its FAILED write, which the test can read first.
    const entry = await waitFor(async () => {
      const list = await api(stack, 'GET', '/api/v1/dlq?limit=500');
      return (list.body['items'] as { job_id: string; reason_code: string }[]).find((e) => e.job_id === id);
    }, 10_000, { message: 'the DLQ entry' });
    expect(entry).toMatchObject({ reason_code: 'echo_failed' });
    // The scheduler wrote the entry, then published the notice; a gateway found it present.
    await waitFor(async () => (await gatewayNotices('present')) >= before + 1, 10_000, { intervalMs: 100, message: 'notice consumed' });
    await barrier();
    expect(await gatewayNotices('present')).toBe(before + 1);
    expect(await gatewayNotices('filed')).toBe(0);
    ranOnce.push(id);
  }, 60_000);
});

describe('denied and held jobs', () => {
  it('a denied topic: 403, DENIED, 0 executions, DLQ entry within 10 s', async () => {
    const t0 = Date.now();
    const r = await submit(KEYS.alice, { topic: 'job.admin.drop', prompt: 'drop everything' });
    expect(r.status).toBe(403);
    expect(r.body).toMatchObject({ code: 'policy_denied', error: 'admin jobs are not allowed' });
    const id = String(r.body['job_id']);
    neverRan.push(id);
    const dlq = await waitFor(async () => {
      const list = await api(stack, 'GET', '/api/v1/dlq?limit=500');
      return (list.body['items'] as { job_id: string }[]).find((e) => e.job_id === id);
    }, 10_000, { intervalMs: 50, message: 'DLQ entry' });
    const dlqMs = Date.now() - t0;
    expect(dlq).toMatchObject({ reason_code: 'policy_denied', last_state: 'DENIED', topic: 'job.admin.drop' });
    expect(await job(id)).toMatchObject({ state: 'DENIED', safety: { decision: 'deny', rule_id: 'deny-admin' } });
    await barrier();
    expect(stack.executions().get(id)).toBeUndefined();
    console.log(`[safety e2e] denied job: DLQ entry visible ${dlqMs} ms after submit`);
  }, 60_000);

  it('a held job: 0 executions before approval, self-approval 403, a second operator → exactly 1 execution', async () => {
    const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'deploy to prod', labels: { env: 'prod' } });
    expect(r.body).toMatchObject({ status: 'approval_required', reason: 'production changes need a human' });
    const id = String(r.body['job_id']);
    await barrier();
    expect(stack.executions().get(id)).toBeUndefined();
    expect((await job(id))['state']).toBe('APPROVAL_REQUIRED');

    const listed = await api(gw(1), 'GET', '/api/v1/approvals', undefined, as(KEYS.bob));
    const item = (listed.body['items'] as { job: { id: string }; rule_id: string; job_hash: string }[]).find((i) => i.job.id === id);
    expect(item).toMatchObject({ rule_id: 'hold-prod' });
    const self = await api(gw(0), 'POST', `/api/v1/approvals/${id}/approve`, {}, as(KEYS.alice));
    expect(self.status).toBe(403);
    expect(self.body['code']).toBe('self_approval_denied');
    await barrier();
    expect(stack.executions().get(id)).toBeUndefined();

    const ok = await api(gw(1), 'POST', `/api/v1/approvals/${id}/approve`, { job_hash: item!.job_hash, reason: 'ticket 7' }, as(KEYS.bob));
    expect(ok.body).toEqual({ job_id: id, state: 'PENDING' });
    const done = await terminal(id);
    expect(done).toMatchObject({ state: 'SUCCEEDED', approval: { status: 'approved', by: 'bob', rule_id: 'hold-prod' } });
    expect((done['safety'] as { reason: string }).reason).toMatch(/^approved by bob/);
    await barrier();
    expect(stack.executions().get(id)).toBe(1);
    ranOnce.push(id);
  }, 90_000);

  it('10 concurrent approvals sent to two gateways → exactly 1 execution', async () => {
    const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'deploy again', labels: { env: 'prod' } });
    const id = String(r.body['job_id']);
    const approvers = [KEYS.bob, KEYS.carol];
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => api(gw(i % 2), 'POST', `/api/v1/approvals/${id}/approve`, {}, as(approvers[i % 2]!))));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(answers.filter((a) => a.body['status'] === 'already_approved')).toHaveLength(9);
    expect((await terminal(id))['state']).toBe('SUCCEEDED');
    await barrier();
    expect(stack.executions().get(id)).toBe(1);
    ranOnce.push(id);
  }, 90_000);

  it('a rejected job ends DENIED with a DLQ entry and never runs', async () => {
    const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'risky', labels: { env: 'prod' } });
    const id = String(r.body['job_id']);
    neverRan.push(id);
    const rej = await api(gw(1), 'POST', `/api/v1/approvals/${id}/reject`, { reason: 'not today' }, as(KEYS.carol));
    expect(rej.body).toEqual({ job_id: id, state: 'DENIED' });
    expect(await job(id)).toMatchObject({ state: 'DENIED', error: { code: 'approval_rejected', message: 'not today' }, approval: { status: 'rejected', by: 'carol' } });
    const list = await api(stack, 'GET', '/api/v1/dlq?limit=500');
    expect((list.body['items'] as { job_id: string; reason_code: string }[]).find((e) => e.job_id === id)).toMatchObject({ reason_code: 'approval_rejected' });
    const late = await api(gw(0), 'POST', `/api/v1/approvals/${id}/approve`, {}, as(KEYS.bob));
    expect(late.body).toMatchObject({ code: 'job_terminal', state: 'DENIED' });
    await barrier();
    expect(stack.executions().get(id)).toBeUndefined();
  }, 60_000);
});

describe('Explain and Simulate against hand-computed answers (12-rule policy)', () => {
  const unmatchedTopic = (topic: string, patterns: string) => `topic '${topic}' matches none of [${patterns}]`;
  const explain = (body: Record<string, unknown>) => api(stack, 'POST', '/api/v1/policy/explain', body, as(KEYS.alice));

  it('GET /policy/rules lists the 12 rules in order, from the file', async () => {
    const r = await api(gw(1), 'GET', '/api/v1/policy/rules');
    expect(r.body['default_decision']).toBe('allow');
    const items = r.body['items'] as { id: string; decision: string; source: string }[];
    expect(items.map((i) => i.id)).toEqual([
      'deny-admin', 'deny-destructive', 'hold-prod', 'hold-payments', 'throttle-llm', 'constrain-batch',
      'deny-gpu-globex', 'allow-ml-train', 'deny-pii-export', 'hold-human-delete', 'allow-echo', 'deny-legacy',
    ]);
    expect(items.every((i) => i.source === 'file')).toBe(true);
    expect(items[2]).toMatchObject({ decision: 'require_approval', spec: { match: { topics: ['job.echo'], labels: { env: 'prod' } } } });
  });

  it('explain: PII export is denied by rule 9; every earlier rule says why it did not match', async () => {
    const t = 'job.export.csv';
    const r = await explain({ topic: t, risk_tags: ['pii'] });
    expect(r.body).toMatchObject({ decision: 'deny', rule_id: 'deny-pii-export', reason: 'no PII export', approval_required: false });
    expect(r.body['trace']).toEqual([
      { rule_id: 'deny-admin', matched: false, why: unmatchedTopic(t, 'job.admin.>') },
      { rule_id: 'deny-destructive', matched: false, why: 'risk_tags [pii] contain none of [destructive, irreversible]' },
      { rule_id: 'hold-prod', matched: false, why: unmatchedTopic(t, 'job.echo') },
      { rule_id: 'hold-payments', matched: false, why: unmatchedTopic(t, 'job.payments.*') },
      { rule_id: 'throttle-llm', matched: false, why: unmatchedTopic(t, 'job.llm.>') },
      { rule_id: 'constrain-batch', matched: false, why: unmatchedTopic(t, 'job.batch.>') },
      { rule_id: 'deny-gpu-globex', matched: false, why: "tenant 'default' not in [globex]" },
      { rule_id: 'allow-ml-train', matched: false, why: "capability '' not in [ml.train]" },
      { rule_id: 'deny-pii-export', matched: true, why: 'all match conditions hold' },
    ]);
  });

  it('explain: a human delete is held by rule 10; a partial requires match falls through to rule 12; throttle under its limit falls to the default', async () => {
    const del = await explain({ topic: 'job.files.delete', actor_type: 'human', labels: { env: 'prod' } });
    expect(del.body).toMatchObject({ decision: 'require_human', rule_id: 'hold-human-delete', approval_required: true, reason: 'deletes by humans need approval' });
    expect((del.body['trace'] as { rule_id: string; matched: boolean; why: string }[]).map((x) => [x.rule_id, x.matched, x.why])).toEqual([
      ['deny-admin', false, unmatchedTopic('job.files.delete', 'job.admin.>')],
      ['deny-destructive', false, 'risk_tags [] contain none of [destructive, irreversible]'],
      ['hold-prod', false, unmatchedTopic('job.files.delete', 'job.echo')],
      ['hold-payments', false, unmatchedTopic('job.files.delete', 'job.payments.*')],
      ['throttle-llm', false, unmatchedTopic('job.files.delete', 'job.llm.>')],
      ['constrain-batch', false, unmatchedTopic('job.files.delete', 'job.batch.>')],
      ['deny-gpu-globex', false, "tenant 'default' not in [globex]"],
      ['allow-ml-train', false, "capability '' not in [ml.train]"],
      ['deny-pii-export', false, unmatchedTopic('job.files.delete', 'job.export.*')],
      ['hold-human-delete', true, 'all match conditions hold'],
    ]);

    const legacy = await explain({ topic: 'job.legacy.old.thing', capability: 'ml.train', requires: ['gpu'] });
    expect(legacy.body).toMatchObject({ decision: 'deny', rule_id: 'deny-legacy', reason: 'legacy topics are retired' });
    const lt = legacy.body['trace'] as { rule_id: string; matched: boolean; why: string }[];
    expect(lt).toHaveLength(12);
    expect(lt[7]).toEqual({ rule_id: 'allow-ml-train', matched: false, why: 'requires missing [cuda]' });
    expect(lt[9]).toEqual({ rule_id: 'hold-human-delete', matched: false, why: unmatchedTopic('job.legacy.old.thing', 'job.*.delete') });
    expect(lt[11]).toEqual({ rule_id: 'deny-legacy', matched: true, why: 'all match conditions hold' });

    const llm = await explain({ topic: 'job.llm.chat' });
    expect(llm.body).toMatchObject({ decision: 'allow', rule_id: '', reason: 'no rule matched; default_decision allow' });
    const tt = llm.body['trace'] as { rule_id: string; matched: boolean; why: string }[];
    expect(tt).toHaveLength(12);
    expect(tt[4]).toEqual({ rule_id: 'throttle-llm', matched: false, why: 'velocity under limit (0/2 per 60s by tenant)' });
    expect(tt.every((x) => !x.matched)).toBe(true);

    const batch = await explain({ topic: 'job.batch.nightly', actor_type: 'service' });
    expect(batch.body).toMatchObject({
      decision: 'allow_with_constraints',
      rule_id: 'constrain-batch',
      constraints: { max_runtime_ms: 60000, max_retries: 1, max_artifact_bytes: 0, max_concurrent_jobs: 0 },
    });
    expect((batch.body['trace'] as unknown[]).length).toBe(6);
    const gpu = await explain({ topic: 'job.train', capability: 'ml.train', requires: ['cuda', 'gpu', 'x'] });
    expect(gpu.body).toMatchObject({ decision: 'allow', rule_id: 'allow-ml-train', reason: 'training on GPU is fine' });
    expect((gpu.body['trace'] as { why: string }[])[6]?.why).toBe("tenant 'default' not in [globex]");
  });

  it('simulate: a candidate policy answers without being activated', async () => {
    const before = await api(stack, 'GET', '/api/v1/policy/snapshots');
    // The same rules with deny-legacy moved first and default deny.
    const lines = POLICY.split('\n');
    const start = lines.findIndex((l) => l.includes('- id: deny-legacy'));
    const legacyRule = lines.slice(start, start + 4);
    const rest = [...lines.slice(0, start), ...lines.slice(start + 4)];
    const rulesAt = rest.indexOf('rules:');
    const candidate = [...rest.slice(0, rulesAt + 1), ...legacyRule, ...rest.slice(rulesAt + 1)].join('\n').replace('default_decision: allow', 'default_decision: deny');
    const sim = (body: Record<string, unknown>) => api(stack, 'POST', '/api/v1/policy/simulate', { ...body, policy_yaml: candidate }, as(KEYS.alice));

    const legacy = await sim({ topic: 'job.legacy.x' });
    expect(legacy.body).toMatchObject({ decision: 'deny', rule_id: 'deny-legacy', trace: [{ rule_id: 'deny-legacy', matched: true, why: 'all match conditions hold' }] });
    expect(legacy.body['policy_snapshot']).toMatch(/^[0-9a-f]{64}$/);
    expect(legacy.body['policy_snapshot']).not.toBe(before.body['current']);
    const other = await sim({ topic: 'job.other.x' });
    expect(other.body).toMatchObject({ decision: 'deny', rule_id: '', reason: 'no rule matched; default_decision deny' });
    const ot = other.body['trace'] as { rule_id: string; matched: boolean }[];
    expect(ot.map((x) => x.rule_id)).toEqual(['deny-legacy', 'deny-admin', 'deny-destructive', 'hold-prod', 'hold-payments', 'throttle-llm', 'constrain-batch', 'deny-gpu-globex', 'allow-ml-train', 'deny-pii-export', 'hold-human-delete', 'allow-echo']);
    expect(ot.every((x) => !x.matched)).toBe(true);
    const bad = await api(stack, 'POST', '/api/v1/policy/simulate', { topic: 'job.x', policy_yaml: 'version: 1\ndefault_decision: deny\nrules:\n  - id: a\n    match: { tenant: [x] }\n    decision: allow\n' }, as(KEYS.alice));
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'invalid_policy' });
    expect(String(bad.body['error'])).toMatch(/rule 'a' \(rules\[0\]\): match.*tenant/);

    // Not activated: the live policy still allows job.other.x and the snapshot did not move.
    expect((await api(stack, 'POST', '/api/v1/policy/evaluate', { topic: 'job.other.x' }, as(KEYS.alice))).body).toMatchObject({ decision: 'allow', policy_snapshot: before.body['current'] });
    expect((await api(stack, 'GET', '/api/v1/policy/snapshots')).body['current']).toBe(before.body['current']);
  });
});

describe('policy change through config', () => {
  it('two kernel replicas switch within 5 s; no replica serves an old-snapshot decision after its switch, cache or not', async () => {
    const clients: KernelClient[] = stack.kernelAddrs.map((a) => grpcClientFor(SafetyKernel, a, { defaultDeadlineMs: 2_000 }));
    try {
      const req = { jobId: '', topic: 'job.alpha', tenant: 'default', principalId: 'alice' };
      const oldSnap = (await clients[0]!.listSnapshots({})).current;
      expect((await clients[1]!.listSnapshots({})).current).toBe(oldSnap);
      // Warm both caches with the old decision.
      for (const c of clients) for (let i = 0; i < 5; i++) expect((await c.evaluate(req)).decision).toBe(Decision.ALLOW);
      for (const k of [1, 2]) {
        const text = await (await fetch(`http://127.0.0.1:${stack.healthPorts.get(`safety-kernel-${k}`)}/metrics`)).text();
        expect(Number(/^cordum_safety_decision_cache_hits_total\{[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0)).toBeGreaterThanOrEqual(4);
      }

      const bundle = { safety: { bundles: { ops: { rules: [{ id: 'deny-alpha', match: { topics: ['job.alpha'] }, decision: 'deny', reason: 'alpha is closed' }] } } } };
      const put = await api(stack, 'PUT', '/api/v1/config', bundle);
      expect(put.status).toBe(204);
      const t0 = Date.now();
      const switchMs: number[] = [];
      const seen: { replica: number; snapshot: string; decision: Decision }[] = [];
      await Promise.all(
        clients.map(async (c, replica) => {
          let switched = false;
          // Poll until the new decision, then 20 more answers: none may come from the old snapshot.
          for (let after = 0; after < 20; ) {
            const r = await c.evaluate(req);
            seen.push({ replica, snapshot: r.policySnapshot, decision: r.decision });
            if (r.decision === Decision.DENY) {
              if (!switched) switchMs[replica] = Date.now() - t0;
              switched = true;
            }
            if (switched) after++;
            else if (Date.now() - t0 > 10_000) throw new Error(`replica ${replica} did not switch within 10 s`);
            await new Promise((res) => setTimeout(res, 10));
          }
        }),
      );
      const newSnap = (await clients[0]!.listSnapshots({})).current;
      expect(newSnap).not.toBe(oldSnap);
      expect((await clients[1]!.listSnapshots({})).current).toBe(newSnap);
      // Every answer is consistent with its snapshot, and each replica moves old → new once, never back.
      for (const s of seen) expect([s.snapshot, s.decision]).toEqual(s.snapshot === oldSnap ? [oldSnap, Decision.ALLOW] : [newSnap, Decision.DENY]);
      for (const replica of [0, 1]) {
        const snaps = seen.filter((s) => s.replica === replica).map((s) => s.snapshot);
        const firstNew = snaps.indexOf(newSnap);
        expect(firstNew).toBeGreaterThanOrEqual(0);
        expect(snaps.slice(firstNew).every((x) => x === newSnap)).toBe(true);
      }
      expect(Math.max(...switchMs)).toBeLessThan(5_000);
      console.log(`[safety e2e] policy switch after PUT /config: replica 1 ${switchMs[0]} ms, replica 2 ${switchMs[1]} ms`);

      // End to end through the gateways (which round-robin over both kernels).
      for (const via of [0, 1, 0, 1]) {
        const r = await submit(KEYS.alice, { topic: 'job.alpha', prompt: 'x' }, via);
        expect(r.body).toMatchObject({ code: 'policy_denied', error: 'alpha is closed' });
        neverRan.push(String(r.body['job_id']));
      }
    } finally {
      clients.forEach((c) => c.close());
    }
  }, 60_000);
});

describe('a deny added while a job keeps retrying (P131)', () => {
  it('ends the job FAILED policy_denied at its next retry; no attempt runs after that', async () => {
    const loop = { topics: ['job.default'], labels: { lane: 'loop' } };
    // Allowed with (practically) endless attempts: without the re-check nothing but this job's 2^31 attempts would end it.
    const allowLoop = { safety: { bundles: { loop: { rules: [{ id: 'loop-retries', match: loop, decision: 'allow_with_constraints', constraints: { max_retries: 2147483647 } }] } } } };
    expect((await api(stack, 'PUT', '/api/v1/config', allowLoop)).status).toBe(204);
    const clients: KernelClient[] = stack.kernelAddrs.map((a) => grpcClientFor(SafetyKernel, a, { defaultDeadlineMs: 2_000 }));
    const req = { jobId: '', topic: 'job.default', tenant: 'default', principalId: 'alice', labels: { lane: 'loop' } };
    const decidedBy = async (ruleId: string): Promise<boolean> => (await Promise.all(clients.map((c) => c.evaluate(req)))).every((r) => r.ruleId === ruleId);
    try {
      await waitFor(() => decidedBy('loop-retries'), 10_000, { intervalMs: 50, message: 'both kernels allow the loop with its constraint' });
      const r = await submit(KEYS.alice, { topic: 'job.default', prompt: 'retry: again and again', labels: { lane: 'loop' } });
      expect(r.status).toBe(200);
      const id = String(r.body['job_id']);
      // Three attempts: the retries wait their backoff (about 1 s, then 2 s; P140).
      await waitFor(() => (stack.executions().get(id) ?? 0) >= 3, 20_000, { intervalMs: 50, message: 'the job retrying' });
      // "freeze" sorts before "loop": its rule decides first (bundles in id order).
      const freeze = { safety: { bundles: { freeze: { rules: [{ id: 'freeze-loop', match: loop, decision: 'deny', reason: 'runaway retries' }] } } } };
      expect((await api(stack, 'PUT', '/api/v1/config', freeze)).status).toBe(204);
      const done = await terminal(id);
      expect(done).toMatchObject({ state: 'FAILED', error: { code: 'policy_denied' }, safety: { decision: 'deny', rule_id: 'freeze-loop' } });
      // Every execution was an attempt (one the verifier replaced unstarted would be an attempt without one).
      const ran = stack.executions().get(id) ?? 0;
      expect(ran).toBeGreaterThanOrEqual(3);
      expect(ran).toBeLessThanOrEqual(Number(done['attempts']));
      await barrier();
      expect(stack.executions().get(id)).toBe(ran);
      retriedMany.push(id);
      console.log(`[safety e2e] retry loop stopped by a deny after ${ran} attempts`);
      // Lifted as operations.md says (a merge patch deleting the bundle): the lane runs again.
      expect((await api(stack, 'PUT', '/api/v1/config', { safety: { bundles: { freeze: null } } })).status).toBe(204);
      await waitFor(() => decidedBy('loop-retries'), 10_000, { intervalMs: 50, message: 'the freeze lifted on both kernels' });
      const after = await submit(KEYS.alice, { topic: 'job.default', prompt: 'once', labels: { lane: 'loop' } });
      expect(after.status).toBe(200);
      expect(await terminal(String(after.body['job_id']))).toMatchObject({ state: 'SUCCEEDED' });
      ranOnce.push(String(after.body['job_id']));
    } finally {
      clients.forEach((c) => c.close());
    }
  }, 60_000);
});

describe('a safety kernel replica frozen (SIGSTOP) with jobs arriving', () => {
  const kernelMetric = (k: number, name: string): Promise<number> => stackMetric(stack, `safety-kernel-${k}`, name);

  it('the other replica takes every Check once the frozen one missed a deadline; it is used again after SIGCONT', async () => {
    const frozen = stack.procs.get('safety-kernel-1')!;
    await frozen.freeze();
    let resumed = false;
    try {
      // Each service's first call to the frozen kernel waits out its 2 s deadline (the gateway's
      // Evaluate then accepts PENDING, D19; the scheduler's Check holds the job and retries it).
      for (let i = 0; i < 2; i++) {
        const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: `frozen warm ${i}` }, i % 2);
        expect(r.status).toBe(200);
        const id = String(r.body['job_id']);
        expect((await terminal(id, 30_000))['state']).toBe('SUCCEEDED');
        ranOnce.push(id);
      }
      // From now on no Check goes to the frozen kernel: no failure, no breaker, no delay.
      const opensBefore = await schedulerMetric('cordum_scheduler_safety_breaker_transitions_total', { to: 'open' });
      const unavailableBefore = await schedulerMetric('cordum_scheduler_safety_checks_total', { outcome: 'unavailable' });
      const started = Date.now();
      const ids = await pool(Array.from({ length: 20 }, (_, i) => i), 10, async (i) => {
        const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: `frozen ${i}` }, i % 2);
        expect(r.status).toBe(200);
        return String(r.body['job_id']);
      });
      const finals = await pool(ids, 10, (id) => terminal(id, 15_000));
      for (const j of finals) expect(j).toMatchObject({ state: 'SUCCEEDED', safety: { decision: 'allow' } });
      const took = Date.now() - started;
      expect(await schedulerMetric('cordum_scheduler_safety_breaker_transitions_total', { to: 'open' })).toBe(opensBefore);
      expect(await schedulerMetric('cordum_scheduler_safety_checks_total', { outcome: 'unavailable' })).toBe(unavailableBefore);
      ranOnce.push(...ids);

      frozen.kill('SIGCONT');
      resumed = true;
      // Its health probe answers again, and new Checks reach it.
      const decidedBefore = await kernelMetric(1, 'cordum_safety_decisions_total');
      await waitFor(async () => {
        const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: 'thawed' });
        ranOnce.push(String(r.body['job_id']));
        return (await kernelMetric(1, 'cordum_safety_decisions_total')) > decidedBefore;
      }, 20_000, { intervalMs: 250, message: 'the thawed kernel deciding again' });
      await barrier();
      console.log(`[safety e2e] one kernel frozen: 20 jobs all SUCCEEDED in ${took} ms with no Check failure`);
    } finally {
      if (!resumed) frozen.kill('SIGCONT');
    }
  }, 120_000);
});

describe('safety kernel killed with jobs arriving', () => {
  const killKernels = async () => {
    for (const k of [1, 2]) {
      const p = stack.procs.get(`safety-kernel-${k}`)!;
      p.kill('SIGKILL');
      await p.waitExit(10_000);
    }
  };

  it('fail mode closed: nothing runs while it is down; every held job dispatches within 30 s of its return', async () => {
    await killKernels();
    const ids = await pool(Array.from({ length: 10 }, (_, i) => i), 10, async (i) => {
      const r = await submit(KEYS.alice, { topic: 'job.echo', prompt: `closed ${i}` }, i % 2);
      expect(r.status).toBe(200); // D19: accepted PENDING, the scheduler's Check enforces
      return String(r.body['job_id']);
    });
    const refusedBefore = await schedulerMetric('cordum_scheduler_safety_checks_total', { outcome: 'breaker_open' });
    // The breaker opened and every job came back at least once (NAK 5 s) and was held again.
    await waitFor(async () => (await schedulerMetric('cordum_scheduler_safety_breaker_state')) === 2 && (await schedulerMetric('cordum_scheduler_safety_checks_total', { outcome: 'breaker_open' })) >= refusedBefore + 10, 30_000, { intervalMs: 200, message: 'breaker open and jobs re-held' });
    const ex = stack.executions();
    for (const id of ids) expect({ id, n: ex.get(id) ?? 0 }).toEqual({ id, n: 0 });
    for (const id of ids) expect((await job(id))['state']).toBe('PENDING');
    expect((await job(ids[0]!))['safety']).toMatchObject({ decision: 'unavailable' });

    await Promise.all([stack.spawnKernel(1), stack.spawnKernel(2)]);
    const back = Date.now();
    const finals = await pool(ids, 10, (id) => terminal(id, 30_000));
    const dispatchDelays = finals.map((j) => Date.parse(String(j['dispatched_at'])) - back);
    for (const j of finals) expect(j['state']).toBe('SUCCEEDED');
    expect(Math.max(...dispatchDelays)).toBeLessThan(30_000);
    await waitFor(async () => (await schedulerMetric('cordum_scheduler_safety_breaker_state')) === 0, 5_000, { message: 'breaker closed' });
    expect(await schedulerMetric('cordum_scheduler_safety_breaker_transitions_total', { to: 'closed' })).toBeGreaterThanOrEqual(1);
    await barrier();
    const after = stack.executions();
    for (const id of ids) expect({ id, n: after.get(id) }).toEqual({ id, n: 1 });
    ranOnce.push(...ids);
    console.log(`[safety e2e] fail closed: held jobs dispatched ${Math.min(...dispatchDelays)}..${Math.max(...dispatchDelays)} ms after the kernels were ready again`);
  }, 120_000);

  it('fail mode open: jobs run while it is down, with one audit alert each', async () => {
    await stack.procs.get('scheduler-1')!.stop();
    await stack.spawnScheduler(1, { SCHEDULER_INPUT_FAIL_MODE: 'open' });
    await killKernels();
    const ids = await pool(Array.from({ length: 10 }, (_, i) => i), 10, async (i) => String((await submit(KEYS.alice, { topic: 'job.echo', prompt: `open ${i}` }, i % 2)).body['job_id']));
    const finals = await pool(ids, 10, (id) => terminal(id, 30_000));
    for (const j of finals) expect(j).toMatchObject({ state: 'SUCCEEDED', safety: { decision: 'unavailable' } });
    await waitFor(() => ids.every((id) => alerts.some((a) => a.jobId === id)), 10_000, { message: 'one alert per job' });
    for (const id of ids) expect(alerts.filter((a) => a.jobId === id)).toEqual([{ code: 'safety.input_fail_open', jobId: id }]);
    expect(await schedulerMetric('cordum_scheduler_safety_fail_open_total')).toBe(10);
    const decisions = await api(stack, 'GET', `/api/v1/jobs/${ids[0]}/decisions`);
    expect((decisions.body['items'] as { decision: string; state: string }[]).map((d) => [d.decision, d.state])).toEqual([
      ['unavailable', 'PENDING'],
      ['unavailable', 'SCHEDULED'],
    ]);
    await barrier();
    const ex = stack.executions();
    for (const id of ids) expect({ id, n: ex.get(id) }).toEqual({ id, n: 1 });
    ranOnce.push(...ids);
  }, 120_000);

  it('over the whole run: every job ran exactly as often as expected', () => {
    const ex = stack.executions();
    for (const id of ranOnce) expect({ id, n: ex.get(id) }).toEqual({ id, n: 1 });
    for (const id of neverRan) expect({ id, n: ex.get(id) ?? 0 }).toEqual({ id, n: 0 });
    for (const [id, n] of ex) if (!retriedMany.includes(id)) expect({ id, n }).toEqual({ id, n: 1 });
  });
});
