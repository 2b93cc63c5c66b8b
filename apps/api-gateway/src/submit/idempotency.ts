// Per-tenant idempotency claims (D25, basic form): SET NX of
// job:idempotency:<tenant>:<key> = job_id with TTL = job TTL. SET NX is atomic
// across all gateway replicas, so concurrent duplicates create one job.
import { defineScripts, scriptSpec, type RedisClient } from '@cordum/redis';
import { jobKeys } from '@cordum/job-store';
import releaseLua from './lua/release-claim-1.lua';
import freeStaleLua from './lua/free-stale-claim-2.lua';
import { SubmitError } from './errors';

export type ClaimResult = { kind: 'claimed' } | { kind: 'existing'; jobId: string };

export interface IdempotencyClaims {
  claim(tenant: string, key: string, jobId: string): Promise<ClaimResult>;
  /** Deletes the claim iff it still names jobId. */
  release(tenant: string, key: string, jobId: string): Promise<void>;
  current(tenant: string, key: string): Promise<string | null>;
  /** How long ago the claim was made (from its remaining TTL); 0 when absent. */
  ageMs(tenant: string, key: string): Promise<number>;
  /**
   * Frees a claim taken for dead (P307): iff it still names jobId and, in the same step on
   * standalone Redis, jobId has no record (a frozen winner's create that lands first keeps it).
   * On a cluster the record lives in another slot: a compare-and-delete, as `release` (P21).
   */
  freeStale(tenant: string, key: string, jobId: string): Promise<boolean>;
}

/**
 * A claim on a raw key (SET NX key = job id, with a TTL), shared by the idempotency claims here
 * and the DLQ retry claim (dlq/retry.ts, P37): one place for the take, the compare-and-delete
 * release and the age read from the remaining TTL.
 */
export interface KeyClaims {
  /** SET NX with the TTL: true when this call took the key. */
  take(key: string, jobId: string): Promise<boolean>;
  current(key: string): Promise<string | null>;
  /** Deletes the claim iff it still names jobId; true when it did. */
  release(key: string, jobId: string): Promise<boolean>;
  /** How long ago the claim was made (from its remaining TTL); 0 when absent. */
  ageMs(key: string): Promise<number>;
}

export function createKeyClaims(redis: RedisClient, ttlMs: number): KeyClaims {
  const scripts = defineScripts(redis, [scriptSpec('release-claim-1.lua', releaseLua)]);
  return {
    take: async (key, jobId) => (await redis.set(key, jobId, 'PX', ttlMs, 'NX')) === 'OK',
    current: (key) => redis.get(key),
    release: async (key, jobId) => Number(await scripts.run('release-claim', [key], [jobId])) === 1,
    async ageMs(key) {
      const left = await redis.pttl(key);
      return left < 0 ? 0 : Math.max(0, ttlMs - left);
    },
  };
}

export function createIdempotencyClaims(redis: RedisClient, ttlMs: number): IdempotencyClaims {
  const claims = createKeyClaims(redis, ttlMs);
  const scripts = defineScripts(redis, [scriptSpec('free-stale-claim-2.lua', freeStaleLua)]);
  const current = (tenant: string, key: string) => claims.current(jobKeys.idempotency(tenant, key));
  return {
    async claim(tenant, key, jobId) {
      // A claim that expires or is released between SET NX and GET is retried; three rounds is plenty.
      for (let round = 0; round < 3; round++) {
        if (await claims.take(jobKeys.idempotency(tenant, key), jobId)) return { kind: 'claimed' };
        const existing = await current(tenant, key);
        if (existing !== null) return { kind: 'existing', jobId: existing };
      }
      throw new SubmitError('idempotency_in_progress', 'idempotency claim keeps changing hands');
    },
    async release(tenant, key, jobId) {
      await claims.release(jobKeys.idempotency(tenant, key), jobId);
    },
    current,
    ageMs: (tenant, key) => claims.ageMs(jobKeys.idempotency(tenant, key)),
    async freeStale(tenant, key, jobId) {
      const claim = jobKeys.idempotency(tenant, key);
      if (redis.isCluster) return claims.release(claim, jobId);
      return Number(await scripts.run('free-stale-claim', [claim, jobKeys.meta(jobId)], [jobId])) === 1;
    },
  };
}
