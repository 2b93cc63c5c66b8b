// `GET /api/v1/workers` and `/status` read the scheduler's worker registry
// snapshot `sys:workers:snapshot` (CONTRACT §5, D41) through the job-store's
// reader, the same codec the scheduler writes and hydrates with: every gateway
// replica reads the same key, so every replica lists the same set. A missing or
// malformed snapshot lists nothing, a malformed entry is skipped (see
// parseWorkerSnapshot); this is a view, not a gate.
import { readWorkerSnapshot, type ApiWorker } from '@cordum/job-store';
import { clusterNow } from '@cordum/redis';
import type { RedisClient } from '@cordum/redis';

export type WorkerView = ApiWorker;

export interface WorkerSnapshotSource {
  /** Every listed worker, offline ones included (`online` says which), sorted by id. */
  read(nowMs?: number): Promise<WorkerView[]>;
}

export function createWorkerSnapshotSource(redis: RedisClient): WorkerSnapshotSource {
  return {
    async read(nowMs = clusterNow()) {
      return (await readWorkerSnapshot(redis, { includeOffline: true, now: nowMs })).items;
    },
  };
}
