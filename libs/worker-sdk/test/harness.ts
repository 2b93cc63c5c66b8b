// Shared fixture: real nats-server + redis-server, a bus client that records
// every result (JetStream durable), progress, heartbeat and handshake packet.
import { connectBus, subjects, type Bus, type Consumer, type Subscription } from '@cordum/bus';
import {
  create,
  decodePacket,
  DispatchIdentitySchema,
  encodePacket,
  JobRequestSchema,
  JobResultSchema,
  newPacket,
  timestampMs,
  type Handshake,
  type Heartbeat,
  type JobProgress,
  type JobResult,
} from '@cordum/protocol';
import { closeRedis, createRedis, type RedisClient } from '@cordum/redis';
import { createLogger, type Logger } from '@cordum/service-kit';
import { startNats, startRedis, waitFor, type TestServer } from '@cordum/testing';
import { randomUUID } from 'node:crypto';

export interface Harness {
  nats: TestServer;
  redisServer: TestServer;
  bus: Bus;
  redis: RedisClient;
  logger: Logger;
  results: Map<string, JobResult[]>;
  progress: JobProgress[];
  /** When the worker made each packet of `progress` (its BusPacket's created_at, epoch ms), in the same order. */
  progressSentAt: number[];
  heartbeats: Heartbeat[];
  /** Each of `heartbeats`' created_at (epoch ms), in the same order. */
  heartbeatsSentAt: number[];
  handshakes: Handshake[];
  /**
   * Publishes a sentinel JobResult and waits until `results` holds it: JetStream delivers in
   * stream order, so every result published before the call has been recorded too (the barrier
   * before asserting how many results a job has).
   */
  resultsDrained(): Promise<void>;
  close(): Promise<void>;
}

export async function startHarness(): Promise<Harness> {
  const [nats, redisServer] = await Promise.all([startNats(), startRedis()]);
  const logger = createLogger({ service: 'worker-sdk-test', instance: 'test', level: 'error' });
  const bus = await connectBus({ servers: [nats.url], name: 'test-observer', logger });
  await bus.ensureStreams();
  const redis = createRedis({ url: redisServer.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  const results = new Map<string, JobResult[]>();
  const progress: JobProgress[] = [];
  const progressSentAt: number[] = [];
  const heartbeats: Heartbeat[] = [];
  const heartbeatsSentAt: number[] = [];
  const handshakes: Handshake[] = [];
  const consumer: Consumer = await bus.consume({
    subject: subjects.result,
    queue: 'test-observer',
    decode: decodePacket,
    handler: (p) => {
      if (p.payload.case === 'jobResult') {
        const r = p.payload.value;
        results.set(r.jobId, [...(results.get(r.jobId) ?? []), r]);
      }
      return Promise.resolve({ kind: 'ack' });
    },
  });
  const subs: Subscription[] = [
    bus.subscribe(subjects.progress, (d) => {
      const p = decodePacket(d);
      if (p.payload.case === 'jobProgress') {
        progress.push(p.payload.value);
        progressSentAt.push(p.createdAt ? timestampMs(p.createdAt) : 0);
      }
    }),
    bus.subscribe(subjects.heartbeat, (d) => {
      const p = decodePacket(d);
      if (p.payload.case === 'heartbeat') {
        heartbeats.push(p.payload.value);
        heartbeatsSentAt.push(p.createdAt ? timestampMs(p.createdAt) : 0);
      }
    }),
    bus.subscribe(subjects.handshake, (d) => {
      const p = decodePacket(d);
      if (p.payload.case === 'handshake') handshakes.push(p.payload.value);
    }),
  ];
  await bus.flush();
  let sentinels = 0;
  const resultsDrained = async (): Promise<void> => {
    const jobId = `sentinel-result-${++sentinels}`;
    await bus.publish(subjects.result, encodePacket(newPacket('test', { case: 'jobResult', value: create(JobResultSchema, { jobId }) })));
    await waitFor(() => results.has(jobId), 10_000, { message: 'sentinel JobResult recorded' });
    results.delete(jobId);
  };
  const h: Harness = {
    nats, redisServer, bus, redis, logger, results, progress, progressSentAt, heartbeats, heartbeatsSentAt, handshakes, resultsDrained,
    close: async () => {
      for (const s of subs) s.unsubscribe();
      await consumer.stop();
      await bus.close();
      await closeRedis(redis);
      // (a test may have replaced h.nats by its restart)
      await Promise.all([h.nats.stop(), redisServer.stop()]);
    },
  };
  return h;
}

export interface JobSpec {
  jobId?: string;
  dispatchId?: string | null;
  attempt?: number;
  prompt?: string;
  context?: unknown;
  /** Write ctx:<id> (default true). */
  withCtx?: boolean;
  /** The request's context pointer instead of redis://ctx:<id>. */
  contextPtr?: string;
}

export interface PublishedJob {
  jobId: string;
  dispatchId: string;
  attempt: number;
  bytes: Uint8Array;
}

/** Writes ctx:<id> like the gateway does, then builds the JobRequest packet the scheduler would send. */
export async function makeJob(h: Harness, topic: string, spec: JobSpec = {}): Promise<PublishedJob> {
  const jobId = spec.jobId ?? `job-${randomUUID()}`;
  const dispatchId = spec.dispatchId === null ? '' : (spec.dispatchId ?? `d-${randomUUID()}`);
  const attempt = spec.attempt ?? 1;
  if (spec.withCtx ?? true) {
    await h.redis.set(`ctx:${jobId}`, JSON.stringify({ prompt: spec.prompt ?? 'hello', context: spec.context ?? null, topic, tenant_id: 'default', priority: 'interactive', created_at: new Date().toISOString() }));
  }
  const request = create(JobRequestSchema, {
    jobId,
    topic,
    contextPtr: spec.contextPtr ?? (spec.withCtx ?? true ? `redis://ctx:${jobId}` : ''),
    tenantId: 'default',
    dispatch: dispatchId ? create(DispatchIdentitySchema, { dispatchId, attempt: BigInt(attempt) }) : undefined,
  });
  const bytes = encodePacket(newPacket('scheduler-test', { case: 'jobRequest', value: request }));
  return { jobId, dispatchId, attempt, bytes };
}

export async function publishJob(h: Harness, subject: string, spec: JobSpec = {}): Promise<PublishedJob> {
  const job = await makeJob(h, subject.startsWith('job.') ? subject : 'job.direct', spec);
  h.bus.publishCore(subject, job.bytes);
  await h.bus.flush();
  return job;
}

export const onlyResult = (h: Harness, jobId: string): JobResult | undefined => h.results.get(jobId)?.[0];

export type LogLine = Record<string, unknown> & { level: string; msg: string };

/** A logger whose JSON lines the test can read. */
export function captureLog(level: 'debug' | 'info' = 'debug'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = createLogger({ service: 'worker-sdk-test', instance: 'test', level, write: (l) => void lines.push(JSON.parse(l) as LogLine) });
  return { logger, lines };
}
