// Warm start (BEHAVIOURS §4, seed 000, D41).
// Writer: every WORKER_SNAPSHOT_INTERVAL (5 s), only under the
// `cordum:scheduler:snapshot:writer` lease (WORKER_SNAPSHOT_LOCK_TTL, 30 s,
// released on shutdown, so a crashed writer is replaced within TTL + one
// interval ≈ 35 s), it writes this replica's registry to `sys:workers:snapshot`
// with each worker's real last_heartbeat.
// Hydration: one read with a 5 s timeout before the consumers bind; failure or
// absence → cold start (wait for heartbeats). Either way /readyz turns green.
import { encodeWorkerSnapshot, jobKeys, parseWorkerSnapshot, type SnapshotWorker, type WorkerSnapshot } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';
import { clusterNow } from '@cordum/redis';
import type { RedisClient } from '@cordum/redis';
import type { Logger } from '@cordum/service-kit';
import { createLeaderLoop, type LeaderLoop } from './leader-loop';
import type { KeptHandshakeInfo, WorkerRegistry, WorkerView } from './registry';

export const SNAPSHOT_WRITER_KEY = 'cordum:scheduler:snapshot:writer';

export function toSnapshot(workers: WorkerView[], writerId: string, now: number, kept: KeptHandshakeInfo[] = []): WorkerSnapshot {
  return {
    captured_at: now,
    writer_id: writerId,
    workers: workers.map(
      (w): SnapshotWorker => ({
        worker_id: w.workerId,
        pool: w.pool,
        active_jobs: w.activeJobs,
        max_parallel_jobs: w.maxParallelJobs,
        capabilities: w.capabilities,
        labels: w.labels,
        cpu_load: w.cpuLoad,
        last_heartbeat: w.lastHeartbeat,
        ready_topics: w.readyTopics,
        start_ack: w.startAck,
      }),
    ),
    kept_handshakes: kept.map((k) => ({ worker_id: k.workerId, ready_topics: k.readyTopics, start_ack: k.startAck, kept_until: k.keptUntil })),
  };
}

export function snapshotWriter(o: { redis: RedisClient; locks: Locks; registry: WorkerRegistry; instanceId: string; intervalMs: number; lockTtlMs: number; logger: Logger; busConnected: () => boolean }): LeaderLoop {
  return createLeaderLoop({
    // A replica cut off from NATS hears no heartbeat: its view goes stale and would show every
    // worker offline to every gateway. It gives the lease up to one that hears them (P190).
    eligible: o.busConnected,
    name: 'snapshot writer',
    locks: o.locks,
    key: SNAPSHOT_WRITER_KEY,
    owner: o.instanceId,
    ttlMs: o.lockTtlMs,
    renewMs: Math.max(50, Math.min(o.intervalMs, Math.floor(o.lockTtlMs / 3))),
    periodMs: () => o.intervalMs,
    logger: o.logger,
    run: async () => {
      // all(): workers the registry still remembers, offline ones included; readers compute `online`.
      const workers = o.registry.all();
      const snap = toSnapshot(workers, o.instanceId, clusterNow(), o.registry.keptHandshakes());
      // P202: a writer that started cold (its snapshot read failed) has no handshake for a CAP
      // worker that sends one only at its start; the stored snapshot's ready_topics and start_ack
      // for it are kept, or replicas warm-starting later would lose its direct subject and D40
      // routing. Read only while some worker lacks one.
      if (workers.some((w) => !o.registry.hasHandshake(w.workerId))) {
        const stored = parseWorkerSnapshot(await o.redis.get(jobKeys.workerSnapshot()));
        const prior = new Map((stored?.workers ?? []).map((w) => [w.worker_id, w]));
        snap.workers = snap.workers.map((w) => {
          const before = prior.get(w.worker_id);
          return !o.registry.hasHandshake(w.worker_id) && before !== undefined ? { ...w, ready_topics: before.ready_topics, start_ack: before.start_ack } : w;
        });
      }
      await o.redis.set(jobKeys.workerSnapshot(), encodeWorkerSnapshot(snap));
    },
  });
}

export type HydrateResult = { kind: 'warm'; workers: number; ageMs: number } | { kind: 'cold'; reason: 'absent' | 'read_failed' | 'invalid' };

export async function hydrate(o: { redis: RedisClient; registry: WorkerRegistry; timeoutMs: number; floorMs: number; logger: Logger }): Promise<HydrateResult> {
  let raw: string | null;
  let timer: NodeJS.Timeout | undefined;
  try {
    raw = await Promise.race([
      o.redis.get(jobKeys.workerSnapshot()),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`snapshot read timed out after ${o.timeoutMs} ms`)), o.timeoutMs);
      }),
    ]);
  } catch (err) {
    o.logger.warn('warm-start read failed', { err: String(err) });
    return { kind: 'cold', reason: 'read_failed' };
  } finally {
    if (timer) clearTimeout(timer);
  }
  if (raw === null) {
    o.logger.info('no snapshot found, starting cold');
    return { kind: 'cold', reason: 'absent' };
  }
  const snap = parseWorkerSnapshot(raw);
  if (!snap) {
    o.logger.warn('warm-start hydrate failed', { err: 'snapshot does not parse' });
    return { kind: 'cold', reason: 'invalid' };
  }
  const n = o.registry.hydrate(
    snap.workers.map((w) => ({
      workerId: w.worker_id,
      pool: w.pool,
      activeJobs: w.active_jobs,
      maxParallelJobs: w.max_parallel_jobs,
      cpuLoad: w.cpu_load,
      labels: w.labels,
      capabilities: w.capabilities,
      lastHeartbeat: w.last_heartbeat,
      readyTopics: w.ready_topics,
      startAck: w.start_ack,
    })),
    o.floorMs,
  );
  // P310: handshakes of workers forgotten after a long silence, kept a day (P301), so such a worker
  // is routable on its topics when it heartbeats again after this replica started.
  const kept = o.registry.hydrateKept((snap.kept_handshakes ?? []).map((k) => ({ workerId: k.worker_id, readyTopics: k.ready_topics, startAck: k.start_ack, keptUntil: k.kept_until })));
  const ageMs = clusterNow() - snap.captured_at;
  o.logger.info('warm start: registry hydrated from snapshot', { workers: n, kept_handshakes: kept, snapshot_age_ms: ageMs, writer_id: snap.writer_id });
  return { kind: 'warm', workers: n, ageMs };
}
