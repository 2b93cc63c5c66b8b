// The one place safety-kernel key names are built (CONTRACT §5). Plain strings
// rather than @cordum/redis KeyBuilder so the contract names are visible verbatim.
const PREFIX = 'cordum:safety';

export const safetyKeys = {
  /** Sorted set of the last policy snapshot ids, score = loaded at (ms). */
  snapshots: (): string => `${PREFIX}:snapshots`,
  /** JSON {rule_count} of one snapshot, for ListSnapshots. */
  snapshotMeta: (id: string): string => `${PREFIX}:snapshot:${id}`,
  /** One velocity window per throttle rule and key value; hash-tagged so the Lua script stays in one slot. */
  velocity: (ruleId: string, keyKind: string, keyValue: string): string => `${PREFIX}:velocity:{${ruleId}|${keyKind}:${keyValue}}`,
  /**
   * JSON {hash, section, instance_id, applied_at}: the last `safety` section a kernel with this
   * policy file (by the file's snapshot id) applied. A kernel that starts beside a section it must
   * refuse serves this one, as the running kernels do (decisions.md, start-time fallback).
   */
  appliedBundles: (fileId: string): string => `${PREFIX}:bundles:applied:${fileId}`,
};
