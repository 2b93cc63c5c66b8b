// The scheduler's view of config sections `pools` and `timeouts` (CONTRACT §6).
// One schema per section: the files under config/ are validated with the same
// zod schemas as the live document (@cordum/config-overlay), so a file that
// loads at start can always be merged, and what the gateway accepts the
// scheduler can apply. A file that does not parse, or names a key no section
// has (`topic:` for `topics:`, P66's check as for a PUT), fails closed at start
// (ConfigError, one line) rather than routing with a half-understood table.
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { MIN_SCAN_INTERVAL_SECONDS, parseYamlStrict, sectionFileErrors, sectionSchemas, TIMEOUT_DEFAULTS, type PoolsSection, type TimeoutsSection } from '@cordum/config-overlay';
import { ConfigError } from '@cordum/service-kit';

export interface PoolsConfig {
  topics: Record<string, string[]>;
  pools: Record<string, { requires: string[] }>;
}

export interface TimeoutsConfig {
  reconciler: { dispatch_timeout_seconds: number; running_timeout_seconds: number; scan_interval_seconds: number };
}

export const EMPTY_POOLS: PoolsConfig = { topics: {}, pools: {} };

/** Section → routing table; absent section or member → empty (topic-named pools, D40). */
export function poolsFromSection(s: PoolsSection | undefined): PoolsConfig {
  const pools: PoolsConfig['pools'] = {};
  for (const [name, p] of Object.entries(s?.pools ?? {})) pools[name] = { requires: p.requires ?? [] };
  return { topics: { ...(s?.topics ?? {}) }, pools };
}

/** Section → reconciler timeouts; absent or 0 → Cordum default (120 s / 300 s / 30 s). */
export function timeoutsFromSection(s: TimeoutsSection | undefined): TimeoutsConfig {
  const r = s?.reconciler ?? {};
  const pick = (v: number | undefined, d: number): number => (v !== undefined && v > 0 ? v : d);
  return {
    reconciler: {
      dispatch_timeout_seconds: pick(r.dispatch_timeout_seconds, TIMEOUT_DEFAULTS.dispatch_timeout_seconds),
      running_timeout_seconds: pick(r.running_timeout_seconds, TIMEOUT_DEFAULTS.running_timeout_seconds),
      // A value stored before the floor (P80) existed is raised to it, not refused.
      scan_interval_seconds: Math.max(pick(r.scan_interval_seconds, TIMEOUT_DEFAULTS.scan_interval_seconds), MIN_SCAN_INTERVAL_SECONDS),
    },
  };
}

export const DEFAULT_TIMEOUTS: TimeoutsConfig = timeoutsFromSection(undefined);

export interface SectionFile<T> {
  /** The file's content as written (validated): what the bootstrap merge puts into the document. */
  raw: unknown;
  value: T;
  source: string;
}

/**
 * D37: an explicitly set path that cannot be read stops the service; a missing
 * default copy (e.g. running from source) falls back to the built-in defaults
 * (→ null: nothing to merge into the document).
 */
export function loadSectionFile<S extends 'pools' | 'timeouts', T>(
  what: string,
  section: S,
  path: string,
  explicit: boolean,
  convert: (s: z.infer<(typeof sectionSchemas)[S]> | undefined) => T,
): SectionFile<T> | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (!explicit) return null;
    throw new ConfigError(`invalid config: ${what} cannot read ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYamlStrict(text);
  } catch (err) {
    throw new ConfigError(`invalid config: ${what} ${path} is not YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  // An empty file (or one of comments only: a truncated ConfigMap, a bad mount) is no document:
  // merged, it replaced the fleet's live section with nothing, and an empty pools section routes
  // every topic without its pools' requirements. `{}` still says "this section is empty" on purpose.
  if (doc === null || doc === undefined) throw new ConfigError(`invalid config: ${what} ${path} is empty; write the ${section} section in it (or {} for an empty one on purpose)`);
  // The API's checks (unknown keys first, then the schema); paths name the section (`pools.topic`).
  const errors = sectionFileErrors(section, doc);
  const res = sectionSchemas[section].safeParse(doc);
  if (errors.length > 0 || !res.success) {
    const detail = errors.length > 0 ? errors.map((e) => `${e.path}: ${e.message}`).join('; ') : 'invalid';
    throw new ConfigError(`invalid config: ${what} ${path}: ${detail}`);
  }
  return { raw: doc, value: convert(res.data as z.infer<(typeof sectionSchemas)[S]>), source: path };
}
