// A Decide stream carries the Check/Evaluate calls of many jobs (P17). An answer grpc-js cannot
// encode (here a max_concurrent_jobs past int32, which the policy schema now refuses, so the
// snapshot is built around it) used to end the whole stream INTERNAL "Error serializing
// response", failing every other job's call on it; the scheduler then let those run fail-open.
// Now only that request is answered INTERNAL, and the stream goes on.
import * as grpc from '@grpc/grpc-js';
import { PolicyLoadError, validatePolicy, type Policy } from '@cordum/config-overlay';
import { Decision, GrpcStatus, SafetyKernel, addGrpcService, createPolicyClient, type PolicyClient } from '@cordum/protocol';
import { createLogger } from '@cordum/service-kit';
import { Registry } from 'prom-client';
import { createSafetyService, type SafetyService } from '../src/grpc/safety-service';
import { SafetyMetrics } from '../src/metrics';
import type { VelocityPort } from '../src/policy/evaluator';
import { toSnapshot } from '../src/policy/parse';
import type { SnapshotStore } from '../src/snapshots/store';

const POLICY = {
  version: 1,
  default_decision: 'deny',
  rules: [
    { id: 'gpu-batch', match: { topics: ['job.batch.>'] }, decision: 'allow_with_constraints', constraints: { max_concurrent_jobs: 3_000_000_000 } },
    { id: 'deny-admin', match: { topics: ['job.admin.>'] }, decision: 'deny' },
    { id: 'allow-echo', match: { topics: ['job.echo'] }, decision: 'allow' },
  ],
};

const noVelocity: VelocityPort = { record: async () => ({ over: false, count: 0, retryAfterMs: 0 }), peek: async () => ({ over: false, count: 0, retryAfterMs: 0 }), unrecord: async () => undefined };

let server: grpc.Server;
let service: SafetyService;
let client: PolicyClient;
const logs: string[] = [];

beforeAll(async () => {
  const snap = toSnapshot(POLICY as Policy, 0); // what the schema would refuse: see the first test
  service = createSafetyService({
    store: { active: snap } as unknown as SnapshotStore,
    velocity: noVelocity,
    metrics: new SafetyMetrics(new Registry()),
    logger: createLogger({ service: 'safety-kernel', instance: 'sk-unencodable', level: 'error', write: (l) => void logs.push(l) }),
  });
  server = new grpc.Server();
  addGrpcService(server, SafetyKernel, service);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  client = createPolicyClient(`127.0.0.1:${port}`, { streams: 1 });
});

afterAll(async () => {
  client?.close();
  service?.decide.drain();
  await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
});

const req = (jobId: string, topic: string) => ({ jobId, topic, tenant: 'acme', principalId: 'p', labels: {} });
const outcome = (r: PromiseSettledResult<{ decision: Decision }>): string =>
  r.status === 'fulfilled' ? Decision[r.value.decision] : `${GrpcStatus[(r.reason as { code: number }).code]} ${(r.reason as { details: string }).details}`;

it('the policy schema refuses the rule (the stream guard is for what gets past it)', () => {
  expect(() => validatePolicy(POLICY)).toThrow(PolicyLoadError);
});

it('one unencodable answer fails only its own request; the other calls on the stream are answered, and the stream stays open', async () => {
  const calls = [
    client.check(req('gpu-1', 'job.batch.train'), 3000),
    ...[1, 2, 3].map((i) => client.check(req(`admin-${i}`, 'job.admin.delete-all'), 3000)),
    client.evaluate(req('echo-1', 'job.echo'), 3000),
    client.evaluate(req('gpu-2', 'job.batch.train'), 3000),
  ];
  const out = (await Promise.allSettled(calls)).map(outcome);
  expect(out.slice(1, 5)).toEqual(['DENY', 'DENY', 'DENY', 'ALLOW']);
  for (const bad of [out[0], out[5]]) {
    expect(bad).toMatch(/^INTERNAL policy answer could not be encoded: /);
    expect(bad).toContain('max_concurrent_jobs');
  }
  // the same single stream is still open and answers
  expect(service.decide.open).toBe(1);
  expect(client.transport).toBe('stream');
  expect(Decision[(await client.check(req('admin-4', 'job.admin.x'), 3000)).decision]).toBe('DENY');
  expect(service.decide.open).toBe(1);
  const logged = logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'policy answer could not be encoded, answered INTERNAL');
  expect(logged.map((l) => [l['job_id'], l['rule_id']])).toEqual([
    ['gpu-1', 'gpu-batch'],
    ['gpu-2', 'gpu-batch'],
  ]);
});
