// Every Redis key the worker SDK touches comes from here. ctx:/res: are the
// CAP pointer keys (CONTRACT §5, untagged because every CAP SDK uses these
// exact names); the claim key shares the job record's {<id>} hash tag (D4) so
// claim-2.lua can read both in one Redis Cluster slot.
export const workerKeys = {
  ctx: (jobId: string): string => `ctx:${jobId}`,
  res: (jobId: string): string => `res:${jobId}`,
  resPtr: (jobId: string): string => `redis://res:${jobId}`,
  claim: (jobId: string): string => `worker:claim:{${jobId}}`,
  jobMeta: (jobId: string): string => `job:meta:{${jobId}}`,
} as const;

/** `redis://ctx:<id>` → `ctx:<id>`; null when empty or not a redis pointer. */
export function pointerKey(ptr: string | undefined): string | null {
  if (!ptr || !ptr.startsWith('redis://')) return null;
  const key = ptr.slice('redis://'.length);
  return key.length > 0 ? key : null;
}

/** Direct-dispatch subject, or null when the id cannot be a subject token (D44). */
export function directSubject(workerId: string): string | null {
  return /^[A-Za-z0-9_-]{1,128}$/.test(workerId) ? `worker.${workerId}.jobs` : null;
}
