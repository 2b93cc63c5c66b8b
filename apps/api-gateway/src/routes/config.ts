// Config API (CONTRACT §2 and §6, D32, D33): GET /config, PUT /config,
// GET /config/effective, GET /config/status. Config is global (not per
// tenant): reads are viewer, writes and status admin (D29).
import { z } from 'zod';
import type { Request, Response } from 'express';
import {
  distinctErrors,
  ConfigValidationError,
  RevisionConflictError,
  DEFAULT_SCOPE,
  DEFAULT_SCOPE_ID,
  applyMergePatch,
  configStatus,
  fileRuleClashes,
  isPlainObject,
  liveFileRules,
  publishConfigChanged,
  safetyConfigKeys,
  type ConfigStore,
  type FileRules,
  type JsonObject,
  type Scope,
  validateConfig,
  unknownConfigKeys,
} from '@cordum/config-overlay';
import type { Bus } from '@cordum/bus';
import type { Logger } from '@cordum/service-kit';
import { ApiError, type ErrorDetail } from '../http/errors';
import { configDocQuerySchema as docQuerySchema, configDocumentFormSchema, configEffectiveQuerySchema as effectiveQuerySchema } from '../http/api-schemas';
import type { Mount } from '../http/app';
import { caller, type Caller } from '../auth/middleware';
import { WILDCARD_TENANT } from '../config';
import { auditIfUnknown, type AuditEvent, type AuditSink } from '../audit/sink';
import { zodDetails } from '../submit/schema';
import { jsonBody } from './jobs';
import { parseQuery } from './job-actions';
import { withTimeout } from '../util/timeout';
import { changeMayHaveRun } from '../http/store-call';
import { errorText } from '@cordum/service-kit';

/**
 * An unknown envelope key is named (one detail per key) with what the document form takes; the
 * check is the schema's strictness (`configDocumentFormSchema`), so nothing is written.
 */
const DOCUMENT_FORM_KEYS = Object.keys(configDocumentFormSchema.shape).join(', ');
function documentFormDetails(err: z.ZodError): ErrorDetail[] {
  return err.issues.flatMap((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => ({ path: [...i.path.map(String), k].join('.'), message: `unknown field; the document form (a body whose data is an object) takes ${DOCUMENT_FORM_KEYS}` }))
      : zodDetails(new z.ZodError([i])),
  );
}

export interface ConfigRouteDeps {
  config: ConfigStore;
  bus: Bus;
  audit: AuditSink;
  logger: Logger;
  instanceId: string;
  redisReady(): boolean;
  /** TENANT_ID: admins bound to it, or to `*`, may write the global config (P320). */
  deploymentTenant: string;
}

const TIMEOUT_MS = 5_000;

/**
 * Maps config-overlay errors by their stable `code` (STYLE 11). A `write` whose answer did not come
 * (timed out, the connection dropped with it in flight) may have been applied: 503 `state_unknown`,
 * not `redis_unavailable`, which says it was not (P335; its repeat could meet its own revision, 409).
 */
function configCall<T>(deps: ConfigRouteDeps, what: string, p: () => Promise<T>, write = false): Promise<T> {
  if (!deps.redisReady()) throw new ApiError('redis_unavailable');
  return withTimeout(p(), TIMEOUT_MS, what).catch((err: unknown) => {
    if (err instanceof ApiError) throw err;
    const e = err as { code?: unknown; errors?: unknown; currentRevision?: number; message?: unknown };
    switch (e.code) {
      case 'revision_conflict':
        throw new ApiError('revision_conflict', { extra: { revision: e.currentRevision } });
      case 'config_invalid_data':
        throw new ApiError('validation_failed', {
          message: 'invalid config',
          details: (Array.isArray(e.errors) ? (e.errors as { path: string; message: string }[]) : []).map((d) => ({ path: d.path ? `data.${d.path}` : 'data', message: d.message })),
        });
      case 'invalid_scope':
        throw new ApiError('validation_failed', { details: [{ path: 'scope', message: typeof e.message === 'string' ? e.message : 'invalid scope' }] });
      case 'config_corrupt':
        // The stored document cannot be read (by JSON.parse or by Redis's cjson): a server-side
        // fault to look at in Redis, not an outage to retry (logged with the key by the handler).
        throw err instanceof Error ? err : new Error(String(err));
      default:
        if (write && changeMayHaveRun(err)) throw new ApiError('state_unknown', { cause: err, message: CONFIG_WRITE_UNKNOWN });
        throw new ApiError('redis_unavailable', { cause: err });
    }
  });
}

const CONFIG_WRITE_UNKNOWN = 'the config write was sent but its answer did not come: it may or may not have been applied; GET /api/v1/config shows the revision and data';

const FILE_RULES_KEY = safetyConfigKeys().fileRules();

/**
 * The rule ids of the running safety kernels' policy files, read only for a write that sets the
 * `safety` section (one HGETALL). None published (no kernel running) → no clash can be seen and
 * the write is checked as before.
 */
function kernelFileRules(deps: ConfigRouteDeps, safety: unknown): Promise<FileRules[]> {
  if (safety === undefined || safety === null) return Promise.resolve([]);
  return configCall(deps, 'read kernel policy file rule ids', () => liveFileRules(deps.config.redis, FILE_RULES_KEY));
}

/** validateConfig, then bundle rule ids against the kernels' file rule ids: a section every kernel must refuse is refused here. */
function writeErrors(data: JsonObject, files: readonly FileRules[]): { path: string; message: string }[] {
  const invalid = validateConfig(data);
  return invalid.length > 0 ? invalid : fileRuleClashes(data['safety'], files);
}

/**
 * `If-Match: "<revision>"` (the ETag GET and PUT send) is the compare-and-set a body `revision`
 * gives, for either write form; `*` (any current document) sets none. A value of any other form,
 * or one that names another revision than the body's, is 400: a precondition the gateway cannot
 * check is never ignored (RFC 9110 §13.1.1 has a server check If-Match before it acts).
 */
function ifMatchRevision(req: Request, bodyRevision: number | undefined): number | undefined {
  const raw = req.headers['if-match'];
  if (raw === undefined) return bodyRevision;
  const value = raw.trim();
  if (value === '*') return bodyRevision;
  const m = /^"(\d{1,15})"$/.exec(value);
  if (!m) throw new ApiError('validation_failed', { details: [{ path: 'If-Match', message: 'must be "<revision>" as in the ETag of GET /api/v1/config, or *' }] });
  const revision = Number(m[1]);
  if (bodyRevision !== undefined && bodyRevision !== revision) {
    throw new ApiError('validation_failed', { details: [{ path: 'If-Match', message: `names revision ${revision} and the body revision ${bodyRevision}; send one` }] });
  }
  return revision;
}

/** The audit event of a config write (P182: also recorded, with `outcome: unknown`, when the write's outcome is not known). */
const putEvent = (c: Caller, scope: Scope, scopeId: string): AuditEvent => ({ action: 'config.put', tenant: c.tenant ?? c.keyTenant, principal_id: c.principalId, target: `${scope}/${scopeId}` });

export function mountConfigRoutes(mount: Mount, deps: ConfigRouteDeps): void {
  mount('GET /api/v1/config', async (req: Request, res: Response) => {
    const q = parseQuery(docQuerySchema, req);
    const doc = await configCall(deps, 'read config', () => deps.config.get(q.scope ?? DEFAULT_SCOPE, q.scope_id ?? DEFAULT_SCOPE_ID));
    res.setHeader('ETag', `"${doc.revision}"`);
    res.status(200).json(doc);
  });

  mount('PUT /api/v1/config', jsonBody(), async (req: Request, res: Response) => {
    const c = caller(res);
    // P320: config is deployment-wide (policy bundles, fail modes, rate limits, pools for every
    // tenant): an admin bound to another tenant would act beyond its tenant (CONTRACT §2, D26).
    if (c.keyTenant !== WILDCARD_TENANT && c.keyTenant !== deps.deploymentTenant) {
      throw new ApiError('forbidden', { message: `config is deployment-wide: only an admin key of the deployment's tenant (TENANT_ID, '${deps.deploymentTenant}') or of every tenant ('*') may change it` });
    }
    const body: unknown = req.body;
    if (!isPlainObject(body)) throw new ApiError('validation_failed', { details: [{ path: '(body)', message: 'expected a JSON object' }] });
    // D32: the document form iff `data` is an object; anything else is a merge patch into system/default.
    let scope: Scope = DEFAULT_SCOPE;
    let scopeId = DEFAULT_SCOPE_ID;
    let revision: number;
    if (isPlainObject(body['data'])) {
      const f = configDocumentFormSchema.safeParse(body);
      if (!f.success) throw new ApiError('validation_failed', { details: documentFormDetails(f.error) });
      scope = f.data.scope ?? DEFAULT_SCOPE;
      scopeId = f.data.scope_id ?? DEFAULT_SCOPE_ID;
      const data = f.data.data as JsonObject;
      const expected = ifMatchRevision(req, f.data.revision ?? undefined);
      // The raw `data`: zod's record has already dropped an own `__proto__` key from its output.
      // Both name an own `__proto__` below the top level (P273): once each.
      let invalid = distinctErrors([...unknownConfigKeys(body['data']), ...validateConfig(data)]);
      if (invalid.length === 0) invalid = fileRuleClashes(data['safety'], await kernelFileRules(deps, data['safety']));
      if (invalid.length > 0) throw new ApiError('validation_failed', { message: 'invalid config', details: invalid.map((d) => ({ path: d.path ? `data.${d.path}` : 'data', message: d.message })) });
      // With a revision: one compare-and-set (409 on mismatch). Without: our own CAS loop until it lands.
      const w = await auditIfUnknown(deps.audit, putEvent(c, scope, scopeId), () =>
        expected !== undefined
          ? configCall(deps, 'write config', () => deps.config.put(scope, scopeId, data, { expectedRevision: expected, validate: true }), true)
          : configCall(deps, 'write config', () => deps.config.update(scope, scopeId, () => ({ data })), true),
      );
      if (w === null) throw new ApiError('internal');
      revision = w.revision;
    } else {
      // P213: `{}` (also what an empty body parses to) changes nothing, yet was a write: a new
      // revision, a change notice to every replica and an audit event.
      if (Object.keys(body).length === 0) throw new ApiError('validation_failed', { details: [{ path: '(body)', message: 'an empty merge patch changes nothing; send the sections to change, or {"data": {...}} to replace the document' }] });
      const unknown = unknownConfigKeys(body);
      if (unknown.length > 0) throw new ApiError('validation_failed', { message: 'invalid config', details: unknown.map((d) => ({ path: `data.${d.path}`, message: d.message })) });
      const patch = body as JsonObject;
      const expected = ifMatchRevision(req, undefined);
      const files = await kernelFileRules(deps, patch['safety']);
      // mergePatch with validation, plus the file rule ids check on the merged section, in one CAS loop.
      const w = await auditIfUnknown(deps.audit, putEvent(c, scope, scopeId), () =>
        configCall(deps, 'patch config', () =>
          deps.config.update(DEFAULT_SCOPE, DEFAULT_SCOPE_ID, (doc) => {
            if (expected !== undefined && doc.revision !== expected) throw new RevisionConflictError(expected, doc.revision);
            // P212: a null on an unknown key deletes a stored typo; one not stored deletes nothing.
            const dead = unknownConfigKeys(patch, doc.data);
            if (dead.length > 0) throw new ConfigValidationError(dead);
            const data = applyMergePatch(doc.data, patch);
            if (!isPlainObject(data)) throw new ConfigValidationError([{ path: '', message: 'config data must be a JSON object' }]);
            const errors = writeErrors(data, files);
            if (errors.length > 0) throw new ConfigValidationError(errors);
            return { data };
          }),
          true,
        ),
      );
      if (w === null) throw new ApiError('internal');
      revision = w.revision;
    }
    try {
      // Committed: the answer waits at most CONFIG_NOTIFY_FLUSH_BUDGET_MS (2 s) for NATS to confirm
      // the notification. An unbounded flush held it until the connection went stale (10–15 s, P260)
      // with NATS frozen or black-holed.
      await publishConfigChanged(deps.bus, { scope, scopeId, revision, senderId: deps.instanceId });
    } catch (err) {
      // The write landed; replicas converge by polling within one reload interval.
      deps.logger.warn('sys.config.changed publish failed; replicas will pick the change up by polling', { err: errorText(err), revision });
    }
    deps.audit.record({ ...putEvent(c, scope, scopeId), details: { revision: String(revision) } });
    res.setHeader('ETag', `"${revision}"`);
    res.status(204).end();
  });

  mount('GET /api/v1/config/effective', async (req: Request, res: Response) => {
    const q = parseQuery(effectiveQuerySchema, req);
    const chain: Partial<Record<Scope, string>> = { system: DEFAULT_SCOPE_ID, ...q };
    const eff = await configCall(deps, 'effective config', () => deps.config.effective(chain));
    res.status(200).json({ data: eff.data, revisions: eff.revisions });
  });

  mount('GET /api/v1/config/status', async (_req: Request, res: Response) => {
    const st = await configCall(deps, 'config status', () => configStatus(deps.config));
    res.status(200).json(st);
  });
}
