// BEHAVIOURS §4 / D41: the worker registry snapshot `sys:workers:snapshot`,
// written by the scheduler's single snapshot writer and read by scheduler
// hydration and by every gateway replica's `GET /api/v1/workers` (so all
// replicas show the same set). One codec for both sides.
import type { RedisClient } from '@cordum/redis';
import { z } from 'zod';
import { clusterNow } from '@cordum/redis';
import { jobKeys } from './keys';

/** D41: a reader calls a worker online when its last heartbeat is younger than this. */
export const WORKER_ONLINE_MS = 30_000;

/** An epoch-ms time a Date can hold (±8.64e15): anything else would make toISOString throw. */
const epochMs = z.number().min(0).max(8.64e15);

const workerSchema = z.object({
  worker_id: z.string().min(1),
  pool: z.string().default(''),
  active_jobs: z.number().default(0),
  max_parallel_jobs: z.number().default(0),
  capabilities: z.array(z.string()).default([]),
  labels: z.record(z.string(), z.string()).default({}),
  cpu_load: z.number().default(0),
  /** Epoch ms of the worker's real last heartbeat as seen by the writer (never reset on write). */
  last_heartbeat: epochMs,
  ready_topics: z.array(z.string()).default([]),
  start_ack: z.boolean().default(false),
});

/**
 * P310: the handshake of a worker the writer forgot after 10 × TTL of silence, kept until
 * `kept_until` (P301), so a replica started meanwhile still routes to it when it heartbeats again
 * (a CAP node agent sends its handshake only at its start). Not a worker: `/workers` ignores it.
 */
const keptHandshakeSchema = z.object({
  worker_id: z.string().min(1),
  ready_topics: z.array(z.string()).default([]),
  start_ack: z.boolean().default(false),
  kept_until: epochMs,
});

// The envelope must be ours; its entries are checked one by one.
const envelopeSchema = z.object({
  captured_at: epochMs,
  writer_id: z.string(),
  workers: z.array(z.unknown()),
  kept_handshakes: z.array(z.unknown()).optional(),
});

export type SnapshotWorker = z.infer<typeof workerSchema>;
export type KeptHandshake = z.infer<typeof keptHandshakeSchema>;
export interface WorkerSnapshot {
  captured_at: number;
  writer_id: string;
  workers: SnapshotWorker[];
  /** Absent in snapshots written before P310 (an older writer's); readers take it as none. */
  kept_handshakes?: KeptHandshake[];
}

/** CONTRACT §2 `GET /workers` item. */
export interface ApiWorker {
  worker_id: string;
  pool: string;
  active_jobs: number;
  max_parallel_jobs: number;
  capabilities: string[];
  labels: Record<string, string>;
  cpu_load: number;
  last_heartbeat: string;
  online: boolean;
}

export function encodeWorkerSnapshot(s: WorkerSnapshot): string {
  return JSON.stringify(s);
}

/**
 * The one reader of `sys:workers:snapshot` (scheduler hydration and every gateway's `/workers`).
 * Fails closed: a value that is not a snapshot envelope `{captured_at, writer_id, workers[]}`
 * is null (hydration starts cold, `/workers` lists nothing); inside a valid envelope a malformed
 * worker entry is skipped on its own (that worker is unknown until its next heartbeat), so one
 * bad entry never hides the others.
 */
export function parseWorkerSnapshot(raw: string | null): WorkerSnapshot | null {
  if (!raw) return null;
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch {
    return null;
  }
  const env = envelopeSchema.safeParse(doc);
  if (!env.success) return null;
  const workers: SnapshotWorker[] = [];
  for (const w of env.data.workers) {
    const r = workerSchema.safeParse(w);
    if (r.success) workers.push(r.data);
  }
  const kept: KeptHandshake[] = [];
  for (const h of env.data.kept_handshakes ?? []) {
    const r = keptHandshakeSchema.safeParse(h);
    if (r.success) kept.push(r.data);
  }
  return { captured_at: env.data.captured_at, writer_id: env.data.writer_id, workers, kept_handshakes: kept };
}

/**
 * `GET /api/v1/workers` (every gateway replica): items in CONTRACT §2 shape, sorted by id,
 * `online` = now − last_heartbeat < 30 s (D41). Offline workers only with `includeOffline`.
 */
export async function readWorkerSnapshot(
  redis: RedisClient,
  o: { includeOffline?: boolean; now?: number } = {},
): Promise<{ items: ApiWorker[]; captured_at: string | null; writer_id: string | null }> {
  const snap = parseWorkerSnapshot(await redis.get(jobKeys.workerSnapshot()));
  if (!snap) return { items: [], captured_at: null, writer_id: null };
  const now = o.now ?? clusterNow();
  const items = snap.workers
    .map((w): ApiWorker => ({
      worker_id: w.worker_id,
      pool: w.pool,
      active_jobs: w.active_jobs,
      max_parallel_jobs: w.max_parallel_jobs,
      capabilities: w.capabilities,
      labels: w.labels,
      cpu_load: w.cpu_load,
      last_heartbeat: new Date(w.last_heartbeat).toISOString(),
      online: now - w.last_heartbeat < WORKER_ONLINE_MS,
    }))
    .filter((w) => o.includeOffline === true || w.online)
    .sort((a, b) => a.worker_id.localeCompare(b.worker_id));
  return { items, captured_at: new Date(snap.captured_at).toISOString(), writer_id: snap.writer_id };
}
