import { z } from 'zod';
import { clusterNow, type RedisClient } from '@cordum/redis';
import type { ConfigFieldError } from '../errors';
import { parseSafetySection, type PolicyBundle } from './bundles';
import { PolicyLoadError } from './errors';
import { CLOCK_SLACK_MS } from '../clock-slack';

// A bundle rule whose id is also a rule id of a kernel's policy file cannot be composed
// (D22: ids are unique across the file and the bundles). The file is only on the kernels'
// disks, so each kernel publishes its file's rule ids in Redis and every config writer
// refuses such a `safety` section where it is written, as it refuses an invalid one (P44).

/** One kernel's entry in `cordum:safety:file-rules` (field = its instance id). */
export interface FileRules {
  instance_id: string;
  /** Snapshot id of the policy file alone (SHA-256 of its canonical JSON). */
  file_id: string;
  rule_ids: string[];
  /** Epoch ms: the entry counts until then; a running kernel refreshes it. */
  expires_at: number;
}

const fileRulesSchema = z.object({
  instance_id: z.string(),
  file_id: z.string(),
  rule_ids: z.array(z.string()),
  expires_at: z.number(),
});

function parseEntry(raw: string): FileRules | null {
  try {
    const r = fileRulesSchema.safeParse(JSON.parse(raw));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

/**
 * Writes (or refreshes) one kernel's entry and drops the entries expired by more than
 * CLOCK_SLACK_MS (kernels that crashed; a clean stop removes its own): `expires_at` is in the
 * writing kernel's clock, so a kernel whose clock runs ahead must not drop the others' (P195). Dropping is not atomic with another kernel's refresh:
 * a kernel whose entry had expired and that refreshes it at that very moment may lose it until
 * its next refresh, which only lets a clash pass the writer for that long.
 */
export async function publishFileRules(redis: RedisClient, key: string, entry: FileRules, now: number = clusterNow()): Promise<void> {
  await redis.hset(key, entry.instance_id, JSON.stringify(entry));
  const all = await redis.hgetall(key);
  const stale = Object.entries(all)
    .filter(([field, raw]) => field !== entry.instance_id && !((parseEntry(raw)?.expires_at ?? 0) + CLOCK_SLACK_MS > now))
    .map(([field]) => field);
  if (stale.length > 0) await redis.hdel(key, ...stale);
}

/** A cleanly stopping kernel's entry goes at once. */
export async function removeFileRules(redis: RedisClient, key: string, instanceId: string): Promise<void> {
  await redis.hdel(key, instanceId);
}

/**
 * The entries of the kernels running now (one HGETALL); unreadable entries are skipped, and so are
 * entries expired by more than CLOCK_SLACK_MS: a reader whose clock runs ahead still sees the
 * live kernels' rule ids (P195), at the cost of counting a crashed kernel's for that much longer.
 */
export async function liveFileRules(redis: RedisClient, key: string, now: number = clusterNow()): Promise<FileRules[]> {
  const all = await redis.hgetall(key);
  return Object.values(all)
    .map(parseEntry)
    .filter((e): e is FileRules => e !== null && e.expires_at + CLOCK_SLACK_MS > now)
    .sort((a, b) => (a.instance_id < b.instance_id ? -1 : a.instance_id > b.instance_id ? 1 : 0));
}

const MAX_NAMED_KERNELS = 3;

/**
 * One error per bundle rule whose id is a rule id of a live kernel's policy file, on the rule's
 * id (`safety.bundles.<bundle>.rules.<i>.id`). A section that does not parse gives none here:
 * validateConfig reports it.
 */
export function fileRuleClashes(section: unknown, files: readonly FileRules[]): ConfigFieldError[] {
  if (files.length === 0 || section === undefined || section === null) return [];
  let bundles: PolicyBundle[];
  try {
    bundles = parseSafetySection(section);
  } catch (err) {
    if (err instanceof PolicyLoadError) return [];
    throw err;
  }
  const kernels = new Map<string, string[]>();
  for (const f of files) {
    for (const id of new Set(f.rule_ids)) kernels.set(id, [...(kernels.get(id) ?? []), f.instance_id]);
  }
  const out: ConfigFieldError[] = [];
  for (const b of bundles) {
    b.rules.forEach((r, i) => {
      const on = kernels.get(r.id);
      if (!on) return;
      const named = on.slice(0, MAX_NAMED_KERNELS).join(', ') + (on.length > MAX_NAMED_KERNELS ? ` and ${on.length - MAX_NAMED_KERNELS} more` : '');
      out.push({
        path: `safety.bundles.${b.id}.rules.${i}.id`,
        message: `rule '${r.id}' is a rule of the safety kernels' policy file (SAFETY_POLICY_PATH of ${named}); rule ids must be unique across the file and the bundles: rename the bundle rule`,
      });
    });
  }
  return out;
}
