// In-test collaborators for the scheduler integration test: a tiny SafetyKernel
// gRPC server and a tiny worker on core NATS. Real Redis and NATS only.
import type { KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { connectBus, subjects, type Bus, type Subscription } from '@cordum/bus';
import {
  addGrpcService,
  decideHandler,
  create,
  decodePacket,
  Decision,
  GrpcStatus,
  grpcError,
  HandshakeSchema,
  HeartbeatSchema,
  JobProgressSchema,
  JobResultSchema,
  JobStatus,
  newPacket,
  packetEncoder,
  SafetyKernel,
  WORKER_DRAINING_LABEL,
  type JobRequest,
  type PolicyCheckRequest,
} from '@cordum/protocol';
import type { RedisClient } from '@cordum/redis';

export interface TestKernel {
  address: string;
  checks: PolicyCheckRequest[];
  /** When each of `checks` arrived (epoch ms, same index). */
  checkedAt: number[];
  /** While true, Check fails with UNAVAILABLE (the kernel is "down"). */
  failing: boolean;
  stop(): Promise<void>;
}

/** What the test kernel answers to Check / Evaluate / Explain / Simulate. */
export interface KernelAnswer {
  decision: Decision;
  reason: string;
  ruleId: string;
  policySnapshot: string;
  approvalRequired?: boolean;
  /** With THROTTLE: when to ask again (0 when unset). */
  retryAfterMs?: bigint;
  /** With ALLOW_WITH_CONSTRAINTS. */
  constraints?: { maxRuntimeMs?: bigint; maxRetries?: number; maxConcurrentJobs?: number; maxArtifactBytes?: bigint };
}

/** When `kernel` last received a Check for `jobId` (epoch ms), or Infinity if none came. */
export function lastCheckAt(kernel: TestKernel, jobId: string): number {
  for (let i = kernel.checks.length - 1; i >= 0; i--) if (kernel.checks[i]?.jobId === jobId) return kernel.checkedAt[i] ?? Infinity;
  return Infinity;
}

/**
 * A SafetyKernel on a loopback port: allows everything except topics listed in `policy`, or
 * answers with `policy(req)` (which may throw a gRPC error, or answer later). Every request is kept in `checks`.
 */
export async function startTestKernel(policy: string[] | ((req: PolicyCheckRequest) => KernelAnswer | Promise<KernelAnswer>)): Promise<TestKernel> {
  const server = new grpc.Server();
  const checks: PolicyCheckRequest[] = [];
  const checkedAt: number[] = [];
  const decide = typeof policy === 'function' ? policy : (req: PolicyCheckRequest): KernelAnswer => {
    const denied = policy.includes(req.topic);
    return { decision: denied ? Decision.DENY : Decision.ALLOW, reason: denied ? 'topic blocked in test' : 'ok', ruleId: denied ? 'deny-test' : 'allow-all', policySnapshot: 'snap-test' };
  };
  const answer = (req: PolicyCheckRequest): KernelAnswer | Promise<KernelAnswer> => {
    checks.push(req);
    checkedAt.push(Date.now());
    if (kernel.failing) throw grpcError(GrpcStatus.UNAVAILABLE, 'kernel down (test)');
    return decide(req);
  };
  const kernel: TestKernel = {
    address: '',
    checks,
    checkedAt,
    failing: false,
    stop: () =>
      new Promise<void>((resolve) => {
        stream.drain();
        server.tryShutdown(() => resolve());
      }),
  };
  const stream = decideHandler({ check: answer, evaluate: answer });
  addGrpcService(server, SafetyKernel, {
    check: answer,
    evaluate: answer,
    decide: stream,
    explain: answer,
    simulate: answer,
    listSnapshots: () => ({ current: 'snap-test', snapshots: [] }),
    listRules: () => ({ snapshot: 'snap-test', defaultDecision: 'allow' }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  kernel.address = `127.0.0.1:${port}`;
  return kernel;
}

const ignoreLog = (): void => undefined;
/** A bus logger that drops everything (test clients). */
export const quietLog = { debug: ignoreLog, info: ignoreLog, warn: ignoreLog, error: ignoreLog };

/** `silent`: no start ack and no reply (like worker-sdk for a job shorter than its ack delay, until the test replies). */
export type Reply = 'succeed' | 'retry-once' | 'none' | 'silent';

export interface Execution {
  request: JobRequest;
  subject: string;
  /** When the worker received it (Date.now()). */
  at: number;
}

export interface TestWorker {
  id: string;
  executions: Map<string, Execution[]>;
  count(jobId: string): number;
  reply(req: JobRequest, status: JobStatus, opts?: { dispatchId?: string }): Promise<void>;
  /** Heartbeats with the draining label (`cordum.draining`) from now on, or without it again. */
  drain(on: boolean): void;
  stop(): Promise<void>;
}

/**
 * Heartbeats every 100 ms (a worker behaviour, not a test wait), handshakes
 * with direct dispatch and start acks, and answers per `replyFor(topic)`. With `runMs`, a job it
 * succeeds runs that long first, and its heartbeats report the jobs running of `maxParallelJobs`
 * (default 100, reported with 0 running).
 */
export async function startTestWorker(o: { natsUrl: string; redis: RedisClient; id: string; topics: string[]; replyFor: (topic: string) => Reply; signingKey?: KeyObject; maxParallelJobs?: number; runMs?: number }): Promise<TestWorker> {
  const bus: Bus = await connectBus({ servers: [o.natsUrl], name: `test-worker:${o.id}`, logger: quietLog });
  const encode = packetEncoder(o.signingKey); // signed with a key (CAP_VERIFY_KEY_FILE on the scheduler), plain otherwise
  const executions = new Map<string, Execution[]>();
  const direct = `worker.${o.id}.jobs`;

  const send = (subject: string, payload: Parameters<typeof newPacket>[1]) => bus.publishCore(subject, encode(newPacket(o.id, payload)));
  const handshake = () =>
    send(subjects.handshake, { case: 'handshake', value: create(HandshakeSchema, { componentId: o.id, readyTopics: [direct, ...o.topics], capabilities: { start_ack: true } }) });
  let labels: Record<string, string> = {};
  let active = 0;
  const heartbeat = () =>
    send(subjects.heartbeat, { case: 'heartbeat', value: create(HeartbeatSchema, { workerId: o.id, pool: 'default', maxParallelJobs: o.maxParallelJobs ?? 100, activeJobs: active, labels }) });

  const reply = async (req: JobRequest, status: JobStatus, opts: { dispatchId?: string } = {}) => {
    const dispatchId = opts.dispatchId ?? req.dispatch?.dispatchId ?? '';
    if (status === JobStatus.SUCCEEDED) await o.redis.set(`res:${req.jobId}`, JSON.stringify({ echo: req.jobId, worker_id: o.id }));
    const result = create(JobResultSchema, {
      jobId: req.jobId,
      status,
      workerId: o.id,
      resultPtr: status === JobStatus.SUCCEEDED ? `redis://res:${req.jobId}` : '',
      errorCode: status === JobStatus.SUCCEEDED ? '' : 'test_failure',
      dispatch: { dispatchId, attempt: req.dispatch?.attempt ?? 0n, assignedWorkerId: o.id },
    });
    await bus.publish(subjects.result, encode(newPacket(o.id, { case: 'jobResult', value: result })), { msgId: `${subjects.result}:${req.jobId}:${dispatchId}:${status}` });
  };

  const onJob = (data: Uint8Array, subject: string) => {
    const p = decodePacket(data);
    if (p.payload.case !== 'jobRequest') return;
    const req = p.payload.value;
    const list = executions.get(req.jobId) ?? [];
    list.push({ request: req, subject, at: Date.now() });
    executions.set(req.jobId, list);
    const mode = o.replyFor(req.topic);
    if (mode === 'silent') return;
    send(subjects.progress, { case: 'jobProgress', value: create(JobProgressSchema, { jobId: req.jobId, status: JobStatus.RUNNING, dispatch: req.dispatch }) });
    if (mode === 'none') return;
    const status = mode === 'retry-once' && list.length === 1 ? JobStatus.FAILED_RETRYABLE : JobStatus.SUCCEEDED;
    if (o.runMs === undefined) {
      void reply(req, status);
      return;
    }
    active += 1;
    setTimeout(() => {
      active -= 1;
      void reply(req, status);
    }, o.runMs);
  };

  const subs: Subscription[] = [bus.subscribe(direct, onJob), ...o.topics.map((t) => bus.subscribe(t, onJob, { queue: t }))];
  handshake();
  heartbeat();
  const timer = setInterval(() => {
    handshake();
    heartbeat();
  }, 100);

  return {
    id: o.id,
    executions,
    count: (jobId) => executions.get(jobId)?.length ?? 0,
    reply,
    drain: (on) => {
      labels = on ? { [WORKER_DRAINING_LABEL]: 'true' } : {};
      heartbeat();
    },
    stop: async () => {
      clearInterval(timer);
      subs.forEach((s) => s.unsubscribe());
      await bus.close();
    },
  };
}
