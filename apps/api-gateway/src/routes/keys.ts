// GET/POST/DELETE /api/v1/auth/keys: managed API keys (CONTRACT §2, D27, D29 admin).
// A key is created in, listed in and revoked in the acting tenant only.
import { z } from 'zod';
import { clusterNow } from '@cordum/redis';
import { auditIfUnknown, type AuditSink } from '../audit/sink';
import type { ManagedKeys } from '../auth/managed';
import { managedKeyToApi } from '../auth/managed';
import { CONTROL_CHAR_MESSAGE, CONTROL_CHAR_RE, MAX_PRINCIPAL_CHARS, ROLES } from '../auth/keys';
import { actingTenant, caller } from '../auth/middleware';
import { ApiError } from '../http/errors';
import { chargedActingTenant } from '../ratelimit/middleware';
import type { Mount } from '../http/app';
import { zodDetails } from '../submit/schema';
import { jsonBody } from './jobs';

const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

/** Redis stores strings as UTF-8: a lone surrogate came back as U+FFFD, unlike what the 201 echoed. */
const wellFormed = (s: z.ZodString) => s.refine((v) => !/\p{Cs}/u.test(v), 'must be well-formed Unicode (a lone surrogate cannot be stored)');
/** P329: shown to workers, approvals and audits, so no control characters either. */
const printable = (s: z.ZodString) => wellFormed(s).refine((v) => !CONTROL_CHAR_RE.test(v), CONTROL_CHAR_MESSAGE);

// Strict: a misspelt `ttl_seconds` / `expires_at` dropped would create a key that never expires.
// Also the OpenAPI description's body (P170).
export const createKeySchema = z
  .strictObject({
    role: z.enum(ROLES),
    principal_id: printable(z.string().min(1).max(MAX_PRINCIPAL_CHARS)).nullish(),
    name: printable(z.string().max(256)).nullish(),
    expires_at: z.iso.datetime({ offset: true }).nullish(),
    ttl_seconds: z.number().int().positive().max(MAX_TTL_SECONDS).nullish(),
    tenant_id: z.string().nullish(),
  })
  .refine((b) => b.expires_at == null || b.ttl_seconds == null, { message: 'give expires_at or ttl_seconds, not both', path: ['ttl_seconds'] });

export interface KeyRouteDeps {
  keys: ManagedKeys;
  audit: AuditSink;
  redisReady(): boolean;
}

/** Any Redis failure here is a dependency fault (503), never a 500. */
async function store<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError('redis_unavailable', { cause: err });
  }
}

export function mountKeyRoutes(mount: Mount, deps: KeyRouteDeps): void {
  mount('GET /api/v1/auth/keys', async (_req, res) => {
    const tenant = actingTenant(caller(res), undefined);
    if (!deps.redisReady()) throw new ApiError('redis_unavailable');
    const rows = await store(() => deps.keys.list(tenant));
    res.status(200).json({ items: rows.map(managedKeyToApi) });
  });

  mount('POST /api/v1/auth/keys', jsonBody(), async (req, res) => {
    const parsed = createKeySchema.safeParse(req.body);
    if (!parsed.success) throw new ApiError('validation_failed', { details: zodDetails(parsed.error) });
    const b = parsed.data;
    // P295: a `*` admin key naming the tenant in the body is charged to it too (P270's rule).
    const { caller: c, tenant } = await chargedActingTenant(res, b.tenant_id ?? undefined);
    let expiresAt: number | undefined;
    if (b.expires_at != null) {
      expiresAt = Date.parse(b.expires_at);
      if (expiresAt <= clusterNow()) throw new ApiError('validation_failed', { details: [{ path: 'expires_at', message: 'must be in the future' }] });
    }
    const ttlMs = b.ttl_seconds != null ? b.ttl_seconds * 1000 : undefined;
    if (!deps.redisReady()) throw new ApiError('redis_unavailable');
    const { key, record } = await store(() =>
      deps.keys.create({ tenant, role: b.role, principalId: b.principal_id ?? undefined, name: b.name ?? undefined, expiresAt, ttlMs }),
    );
    // Who minted a key, and for which principal: the actions it takes are audited under that principal (P156).
    deps.audit.record({
      action: 'auth_key.create',
      tenant,
      principal_id: c.principalId,
      target: record.id,
      details: { role: record.role, key_principal_id: record.principalId, expires_at: record.expiresAt === null ? '' : new Date(record.expiresAt).toISOString() },
    });
    // The only time the secret is ever returned.
    res.status(201).json({ ...managedKeyToApi(record), key });
  });

  mount('DELETE /api/v1/auth/keys/:id', async (req, res) => {
    const c = caller(res);
    const tenant = actingTenant(c, undefined);
    if (!deps.redisReady()) throw new ApiError('redis_unavailable');
    const keyId = String(req.params['id'] ?? '');
    const rec = await auditIfUnknown(deps.audit, { action: 'auth_key.revoke', tenant, principal_id: c.principalId, target: keyId }, () => store(() => deps.keys.revoke(tenant, keyId)));
    if (!rec) throw new ApiError('key_not_found');
    deps.audit.record({ action: 'auth_key.revoke', tenant, principal_id: c.principalId, target: rec.id, details: { key_principal_id: rec.principalId } });
    res.status(200).json(managedKeyToApi(rec));
  });
}
