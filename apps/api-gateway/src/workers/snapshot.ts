// Reader of the scheduler's worker registry snapshot `sys:workers:snapshot`
// (CONTRACT §5, D41): JSON {captured_at, writer_id, workers: [...]}. Every
// gateway replica reads the same key, so every replica lists the same set.
// Parsing fails open per entry (a malformed worker is skipped, the rest are
// listed) and a missing or unparseable snapshot is an empty list: this is a
// view, not a gate.
import { z } from 'zod';
import type { RedisClient } from '@cordum/redis';

export const WORKERS_SNAPSHOT_KEY = 'sys:workers:snapshot';
/** D41: online = now − last_heartbeat < 30 s. */
export const ONLINE_WINDOW_MS = 30_000;

const timeSchema = z.union([z.number().finite(), z.string().min(1)]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v : Date.parse(v);
  if (!Number.isFinite(ms)) {
    ctx.addIssue({ code: 'custom', message: 'not a time' });
    return z.NEVER;
  }
  return ms;
});

const workerSchema = z.object({
  worker_id: z.string().min(1),
  pool: z.string().catch(''),
  active_jobs: z.number().catch(0),
  max_parallel_jobs: z.number().catch(0),
  capabilities: z.array(z.string()).catch([]),
  labels: z.record(z.string(), z.string()).catch({}),
  cpu_load: z.number().catch(0),
  last_heartbeat: timeSchema,
});

const snapshotSchema = z.object({
  captured_at: z.unknown().optional(),
  writer_id: z.string().optional(),
  workers: z.array(z.unknown()),
});

export interface WorkerView {
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

export interface WorkerSnapshotSource {
  read(nowMs?: number): Promise<WorkerView[]>;
}

export function createWorkerSnapshotSource(redis: RedisClient): WorkerSnapshotSource {
  return {
    async read(nowMs = Date.now()) {
      const raw = await redis.get(WORKERS_SNAPSHOT_KEY);
      if (raw === null) return [];
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        return [];
      }
      const snap = snapshotSchema.safeParse(parsed);
      if (!snap.success) return [];
      const out: WorkerView[] = [];
      for (const w of snap.data.workers) {
        const r = workerSchema.safeParse(w);
        if (!r.success) continue;
        const v = r.data;
        out.push({ ...v, last_heartbeat: new Date(v.last_heartbeat).toISOString(), online: nowMs - v.last_heartbeat < ONLINE_WINDOW_MS });
      }
      out.sort((a, b) => a.worker_id.localeCompare(b.worker_id));
      return out;
    },
  };
}
