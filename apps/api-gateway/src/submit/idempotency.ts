// Per-tenant idempotency claims (D25, basic form): SET NX of
// job:idempotency:<tenant>:<key> = job_id with TTL = job TTL. SET NX is atomic
// across all gateway replicas, so concurrent duplicates create one job.
import { defineScripts, scriptSpec, type RedisClient } from '@cordum/redis';
import { jobKeys } from '@cordum/job-store';
import releaseLua from './lua/release-claim-1.lua';
import { SubmitError } from './errors';

export type ClaimResult = { kind: 'claimed' } | { kind: 'existing'; jobId: string };

export interface IdempotencyClaims {
  claim(tenant: string, key: string, jobId: string): Promise<ClaimResult>;
  /** Deletes the claim iff it still names jobId. */
  release(tenant: string, key: string, jobId: string): Promise<void>;
  current(tenant: string, key: string): Promise<string | null>;
}

export function createIdempotencyClaims(redis: RedisClient, ttlMs: number): IdempotencyClaims {
  const scripts = defineScripts(redis, [scriptSpec('release-claim-1.lua', releaseLua)]);
  const current = (tenant: string, key: string) => redis.get(jobKeys.idempotency(tenant, key));
  return {
    async claim(tenant, key, jobId) {
      // A claim that expires or is released between SET NX and GET is retried; three rounds is plenty.
      for (let round = 0; round < 3; round++) {
        const ok = await redis.set(jobKeys.idempotency(tenant, key), jobId, 'PX', ttlMs, 'NX');
        if (ok === 'OK') return { kind: 'claimed' };
        const existing = await current(tenant, key);
        if (existing !== null) return { kind: 'existing', jobId: existing };
      }
      throw new SubmitError('idempotency_in_progress', 'idempotency claim keeps changing hands');
    },
    async release(tenant, key, jobId) {
      await scripts.run('release-claim', [jobKeys.idempotency(tenant, key)], [jobId]);
    },
    current,
  };
}
