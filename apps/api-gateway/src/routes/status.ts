// GET /api/v1/status (admin, D29): instance, dependency health, worker counts
// and build info. Nothing secret: no URLs, no keys, no config values.
import type { Request, Response } from 'express';
import { pingRedis, type RedisClient } from '@cordum/redis';
import type { Mount } from '../http/app';
import type { WorkerSnapshotSource } from '../workers/snapshot';

export interface StatusDeps {
  instanceId: string;
  redis: RedisClient;
  natsConnected(): boolean;
  workers: WorkerSnapshotSource;
  startedAt: number;
  version: string;
}

export function mountStatusRoute(mount: Mount, deps: StatusDeps): void {
  mount('GET /api/v1/status', async (_req: Request, res: Response) => {
    const redisOk = await pingRedis(deps.redis, 1_000);
    // A status page must answer while Redis is down: workers are then unknown (null), not an error.
    const workers = redisOk ? await deps.workers.read().catch(() => null) : null;
    res.status(200).json({
      instance_id: deps.instanceId,
      nats: { connected: deps.natsConnected() },
      redis: { ok: redisOk },
      workers: workers === null ? null : { total: workers.length, online: workers.filter((w) => w.online).length },
      build: { version: deps.version, node: process.version, started_at: new Date(deps.startedAt).toISOString(), uptime_s: Math.round((Date.now() - deps.startedAt) / 1000) },
    });
  });
}
