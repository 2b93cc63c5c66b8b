// GET /api/v1/workers, /workers/:id (scheduler snapshot, D41), /pools and
// /topics (the applied `pools` section of cfg:system:default; empty when the
// section is absent or malformed).
import { z } from 'zod';
import type { Request, Response } from 'express';
import { DEFAULT_SCOPE, DEFAULT_SCOPE_ID, poolsSectionSchema, type ConfigStore } from '@cordum/config-overlay';
import { ApiError } from '../http/errors';
import type { Mount } from '../http/app';
import type { WorkerSnapshotSource } from '../workers/snapshot';
import { storeCall } from '../http/store-call';
import { parseQuery } from './job-actions';

/** Also the OpenAPI description's query parameters (P297). */
export const workersQuerySchema = z.object({
  include_offline: z.enum(['true', 'false', '1', '0'], { message: 'must be true or false' }).optional(),
});

export interface WorkerRouteDeps {
  workers: WorkerSnapshotSource;
  config: ConfigStore;
  redisReady(): boolean;
}

export interface PoolsView {
  pools: { name: string; requires: string[]; topics: string[] }[];
  topics: { topic: string; pools: string[] }[];
}

export async function readPools(config: ConfigStore): Promise<PoolsView> {
  const doc = await config.get(DEFAULT_SCOPE, DEFAULT_SCOPE_ID);
  const parsed = poolsSectionSchema.safeParse(doc.data['pools'] ?? {});
  const sec = parsed.success ? parsed.data : {};
  const topics = Object.entries(sec.topics ?? {})
    .map(([topic, pools]) => ({ topic, pools: [...pools] }))
    .sort((a, b) => a.topic.localeCompare(b.topic));
  const names = new Set<string>([...Object.keys(sec.pools ?? {}), ...topics.flatMap((t) => t.pools)]);
  const pools = [...names].sort().map((name) => ({
    name,
    requires: [...(sec.pools?.[name]?.requires ?? [])],
    topics: topics.filter((t) => t.pools.includes(name)).map((t) => t.topic),
  }));
  return { pools, topics };
}

export function mountWorkerRoutes(mount: Mount, deps: WorkerRouteDeps): void {
  mount('GET /api/v1/workers', async (req: Request, res: Response) => {
    const q = parseQuery(workersQuerySchema, req);
    const all = q.include_offline === 'true' || q.include_offline === '1';
    const workers = await storeCall(deps, 'read workers', () => deps.workers.read());
    res.status(200).json({ items: all ? workers : workers.filter((w) => w.online) });
  });

  mount('GET /api/v1/workers/:id', async (req: Request, res: Response) => {
    const id = String(req.params['id'] ?? '');
    const workers = await storeCall(deps, 'read workers', () => deps.workers.read());
    const w = workers.find((x) => x.worker_id === id);
    if (!w) throw new ApiError('worker_not_found');
    res.status(200).json(w);
  });

  mount('GET /api/v1/pools', async (_req: Request, res: Response) => {
    const v = await storeCall(deps, 'read pools', () => readPools(deps.config));
    res.status(200).json({ items: v.pools });
  });

  mount('GET /api/v1/topics', async (_req: Request, res: Response) => {
    const v = await storeCall(deps, 'read topics', () => readPools(deps.config));
    res.status(200).json({ items: v.topics });
  });
}
