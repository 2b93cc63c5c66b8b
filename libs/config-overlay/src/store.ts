import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { clusterNow, defineScripts, scriptCodes, scriptSpec, type RedisClient, type ScriptRunner } from '@cordum/redis';
import putLua from './lua/put-1.lua';
import { ConfigOverlayError, ConfigValidationError, RevisionConflictError, isRevisionConflict } from './errors';
import { configKeys, SCOPES, type ConfigKeys, type Scope } from './keys';
import { applyMergePatch, isPlainObject, mergeEffective, type JsonObject } from './merge';
import { findNotJson } from './canonical';
import { validateConfig } from './schema';

export interface ConfigDocument {
  scope: Scope;
  scope_id: string;
  data: JsonObject;
  /** Integer, +1 per write; 0 for a document never written. */
  revision: number;
  /** RFC 3339; null for a document never written. */
  updated_at: string | null;
  /** Server-owned (bootstrap file hashes `_poolsFileHash`, …); never replaced by data writes. */
  meta: Record<string, unknown>;
}

export interface WriteOptions {
  /** Compare-and-set: the write fails with `revision_conflict` unless the stored revision equals it. */
  expectedRevision?: number;
  /** Run `validateConfig` on the resulting data first (throws `config_invalid_data`). */
  validate?: boolean;
}

export interface WriteResult {
  revision: number;
  data: JsonObject;
}

export interface UpdateStep {
  data: JsonObject;
  metaPatch?: Record<string, unknown>;
}

export interface ConfigStore {
  readonly redis: RedisClient;
  readonly keys: ConfigKeys;
  get(scope: Scope, scopeId: string): Promise<ConfigDocument>;
  /** Replaces `data` (meta kept); one Lua CAS. */
  put(scope: Scope, scopeId: string, data: JsonObject, opts?: WriteOptions & { metaPatch?: Record<string, unknown> }): Promise<WriteResult>;
  /** RFC 7386 patch into `data`; without `expectedRevision` it retries its own CAS until it lands. */
  mergePatch(scope: Scope, scopeId: string, patch: JsonObject, opts?: WriteOptions): Promise<WriteResult>;
  /** Merges `patch` into `meta` (null removes a member); data kept; counts as a write (revision +1). */
  setMeta(scope: Scope, scopeId: string, patch: Record<string, unknown>): Promise<WriteResult>;
  /**
   * Generic read-modify-CAS loop, retried on `revision_conflict`: `step` sees the current document
   * and returns the next data (+ meta patch), or null to write nothing (→ null).
   */
  update(scope: Scope, scopeId: string, step: (doc: ConfigDocument) => UpdateStep | null): Promise<WriteResult | null>;
  /** D34 overlay: system → org → team → workflow → step; missing scopes are skipped. */
  effective(chain: Partial<Record<Scope, string>>): Promise<{ data: JsonObject; revisions: Partial<Record<Scope, number>> }>;
}

export interface ConfigStoreOptions {
  /** Key prefix, library unit tests only (D49). */
  prefix?: string;
  /** CAS attempts for writes without an expected revision (default 100). */
  maxCasAttempts?: number;
  now?: () => Date;
}

const storedDocSchema = z.object({
  scope: z.string(),
  scope_id: z.string(),
  data: z.record(z.string(), z.unknown()),
  revision: z.number().int().nonnegative(),
  updated_at: z.string().nullable().optional(),
  // cjson cannot tell [] from {}: an empty meta may come back as an array.
  meta: z.union([z.record(z.string(), z.unknown()), z.array(z.unknown()).length(0)]).optional(),
});

const codes = scriptCodes({ [-2]: 'config_corrupt' });

export function createConfigStore(redis: RedisClient, opts: ConfigStoreOptions = {}): ConfigStore {
  const keys = configKeys(opts.prefix);
  const scripts: ScriptRunner = defineScripts(redis, [scriptSpec('put-1.lua', putLua)]);
  const maxAttempts = opts.maxCasAttempts ?? 100;
  // P300: a document's updated_at in Redis's time (P241), as the replicas' reports and job timestamps.
  const now = opts.now ?? (() => new Date(clusterNow()));

  function checkScope(scope: string, scopeId: string): asserts scope is Scope {
    if (!(SCOPES as readonly string[]).includes(scope)) {
      throw new ConfigOverlayError('invalid_scope', `unknown scope "${scope}" (one of ${SCOPES.join(', ')})`);
    }
    if (scopeId === '' || /[\s*?[\]]/.test(scopeId)) throw new ConfigOverlayError('invalid_scope', `invalid scope_id "${scopeId}"`);
  }

  async function get(scope: Scope, scopeId: string): Promise<ConfigDocument> {
    checkScope(scope, scopeId);
    const raw = await redis.get(keys.doc(scope, scopeId));
    if (raw === null) return { scope, scope_id: scopeId, data: {}, revision: 0, updated_at: null, meta: {} };
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new ConfigOverlayError('config_corrupt', `${keys.doc(scope, scopeId)} is not JSON`, { cause: err });
    }
    // Fail closed: a corrupt document is an error for the caller (the watcher keeps what it has).
    // Nesting past what Redis's cjson decodes counts as unparseable (put-1.lua refuses to write over
    // it, as over text that is not JSON), and no reader recurses into it. A non-finite number
    // (`1e999` reads as Infinity) spoils only its section: sectionHash names it, the rest applies.
    const deep = findNotJson(parsed, { finite: false });
    if (deep) throw new ConfigOverlayError('config_corrupt', `${keys.doc(scope, scopeId)}: ${deep.message}`);
    const res = storedDocSchema.safeParse(parsed);
    if (!res.success) throw new ConfigOverlayError('config_corrupt', `${keys.doc(scope, scopeId)}: ${res.error.issues[0]?.message ?? 'bad shape'}`);
    const d = res.data;
    return {
      scope,
      scope_id: scopeId,
      data: d.data,
      revision: d.revision,
      updated_at: d.updated_at ?? null,
      meta: Array.isArray(d.meta) || d.meta === undefined ? {} : d.meta,
    };
  }

  async function write(scope: Scope, scopeId: string, data: JsonObject, expected: number | undefined, metaPatch: Record<string, unknown> | undefined): Promise<WriteResult> {
    // JSON.stringify writes Infinity as null: a value kept from a hand-stored `1e999` (a bootstrap
    // merge of another section, a write without validation) would change without a word.
    const bad = findNotJson(data, { finite: true });
    if (bad) throw new ConfigValidationError([{ path: bad.where, message: `${bad.reason}; the document cannot be written with it: fix or remove it` }]);
    const res = await scripts.run<[number, number]>('put', [keys.doc(scope, scopeId)], [
      scope,
      scopeId,
      JSON.stringify(data),
      expected === undefined ? '' : String(expected),
      now().toISOString(),
      metaPatch === undefined ? '' : JSON.stringify(metaPatch),
    ]);
    const [status, revision] = res;
    if (status === -1) throw new RevisionConflictError(expected ?? -1, revision);
    codes.check('put', status);
    return { revision, data };
  }

  function checkData(data: unknown, validate: boolean | undefined): asserts data is JsonObject {
    if (!isPlainObject(data)) throw new ConfigValidationError([{ path: '', message: 'config data must be a JSON object' }]);
    if (validate) {
      const errors = validateConfig(data);
      if (errors.length > 0) throw new ConfigValidationError(errors);
    }
  }

  /** Read-modify-CAS until it lands; backoff with jitter so N writers do not retry in lockstep. */
  async function casLoop(scope: Scope, scopeId: string, step: (doc: ConfigDocument) => UpdateStep | null): Promise<WriteResult | null> {
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const doc = await get(scope, scopeId);
      const next = step(doc);
      if (next === null) return null;
      try {
        return await write(scope, scopeId, next.data, doc.revision, next.metaPatch);
      } catch (err) {
        if (!isRevisionConflict(err)) throw err;
        await delay(Math.random() * Math.min(50, 2 * (attempt + 1)));
      }
    }
    throw new ConfigOverlayError('cas_exhausted', `config write to ${scope}/${scopeId} lost ${maxAttempts} compare-and-set rounds`);
  }

  return {
    redis,
    keys,
    get,
    async put(scope, scopeId, data, o = {}) {
      checkScope(scope, scopeId);
      checkData(data, o.validate);
      return write(scope, scopeId, data, o.expectedRevision, o.metaPatch);
    },
    async mergePatch(scope, scopeId, patch, o = {}) {
      checkScope(scope, scopeId);
      if (!isPlainObject(patch)) throw new ConfigValidationError([{ path: '', message: 'merge patch must be a JSON object' }]);
      const apply = (doc: ConfigDocument): JsonObject => {
        const data = applyMergePatch(doc.data, patch) as JsonObject;
        checkData(data, o.validate);
        return data;
      };
      if (o.expectedRevision !== undefined) {
        const doc = await get(scope, scopeId);
        if (doc.revision !== o.expectedRevision) throw new RevisionConflictError(o.expectedRevision, doc.revision);
        return write(scope, scopeId, apply(doc), o.expectedRevision, undefined);
      }
      return mustWrite(await casLoop(scope, scopeId, (doc) => ({ data: apply(doc) })));
    },
    async setMeta(scope, scopeId, patch) {
      checkScope(scope, scopeId);
      return mustWrite(await casLoop(scope, scopeId, (doc) => ({ data: doc.data, metaPatch: patch })));
    },
    async update(scope, scopeId, step) {
      checkScope(scope, scopeId);
      return casLoop(scope, scopeId, (doc) => {
        const next = step(doc);
        if (next !== null) checkData(next.data, false);
        return next;
      });
    },
    async effective(chain) {
      const layers: JsonObject[] = [];
      const revisions: Partial<Record<Scope, number>> = {};
      for (const scope of SCOPES) {
        const id = chain[scope];
        if (id === undefined) continue;
        const doc = await get(scope, id);
        revisions[scope] = doc.revision;
        layers.push(doc.data);
      }
      return { data: mergeEffective(layers), revisions };
    },
  };
}

/** casLoop returns null only when a step declines to write; these steps never do. */
function mustWrite(r: WriteResult | null): WriteResult {
  if (r === null) throw new ConfigOverlayError('cas_exhausted', 'config write produced no result');
  return r;
}
