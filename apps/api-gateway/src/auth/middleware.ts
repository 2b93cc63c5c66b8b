// Authentication, tenancy and role checks for /api/v1 routes (CONTRACT §2, D26, D29).
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ApiError } from '../http/errors';
import { ANY_TENANT, TENANT_RE, roleAllows, type KeyIdentity, type KeyStore, type Role } from './keys';
import { requiredRole, type RouteId } from './routes';

export interface Caller {
  /** The tenant this request acts in; undefined only for a `*` key without X-Tenant-ID (the route may take it from the body). */
  tenant: string | undefined;
  keyTenant: string;
  role: Role;
  principalId: string;
}

function presentedKey(req: Request): string | undefined {
  const header = req.get('x-api-key');
  if (header !== undefined && header.length > 0) return header;
  const auth = req.get('authorization');
  if (auth !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  return undefined;
}

export function caller(res: Response): Caller {
  const c = res.locals['caller'] as Caller | undefined;
  if (!c) throw new Error('caller() used on a route without authorize()');
  return c;
}

/**
 * Resolves the acting tenant against the key; a `tenant_id` in a body must match too (D47). As
 * for the header: for a key bound to a tenant any other body `tenant_id` is 403, however it is
 * spelled; only a `*` key's must itself be a well-formed tenant id (400).
 */
export function actingTenant(c: Caller, bodyTenant: string | undefined): string {
  if (bodyTenant !== undefined) {
    if (c.tenant !== undefined && bodyTenant !== c.tenant) throw new ApiError('tenant_mismatch');
    if (!TENANT_RE.test(bodyTenant)) throw new ApiError('validation_failed', { details: [{ path: 'tenant_id', message: 'must match ^[a-z0-9][a-z0-9_-]{0,62}$' }] });
    if (c.tenant === undefined) return bodyTenant; // `*` key, tenant named only in the body
  }
  if (c.tenant === undefined) throw new ApiError('tenant_required');
  return c.tenant;
}

export interface Credentials {
  key: string | undefined;
  /** X-Tenant-ID (or gRPC x-tenant-id); empty/undefined = the key's tenant. */
  tenantHeader: string | undefined;
  /** The client's address without port, for the failed-login budget (P55). */
  client?: string;
}

/** The identity a presented key proves, null for none; throws what the store throws (redis_unavailable, rate_limited). */
export async function identify(keys: KeyStore, cred: Credentials): Promise<KeyIdentity | null> {
  return cred.key === undefined || cred.key === '' ? null : await keys.lookup(cred.key, cred.client);
}

/**
 * Tenant binding and role for an identity already looked up (null = no valid key). Pure, so a
 * stream can re-apply it to every socket of one key after a single lookup. Throws ApiError.
 */
export function authorizeIdentity(id: KeyIdentity | null, route: RouteId, header: string | undefined): Caller {
  const need = requiredRole(route);
  if (!id) throw new ApiError('unauthenticated');
  let tenant: string | undefined;
  if (header !== undefined && header !== '') {
    // CONTRACT §2: for a key bound to a tenant any other X-Tenant-ID is a mismatch (403), however
    // it is spelled; only a `*` key's header must itself be a well-formed tenant id (400).
    if (id.tenant !== ANY_TENANT && header !== id.tenant) throw new ApiError('tenant_mismatch');
    if (!TENANT_RE.test(header)) throw new ApiError('invalid_tenant');
    tenant = header;
  } else {
    tenant = id.tenant === ANY_TENANT ? undefined : id.tenant;
  }
  if (!roleAllows(id.role, need)) throw new ApiError('forbidden', { message: `role ${id.role} cannot use ${route}; needs ${need}` });
  return { tenant, keyTenant: id.tenant, role: id.role, principalId: id.principalId };
}

export function presentedCredentials(req: Request): Credentials {
  return { key: presentedKey(req), tenantHeader: req.get('x-tenant-id'), client: req.socket.remoteAddress };
}

/** What authorizeIdentity refuses a key that did authenticate: the request still counts (P172). */
const REFUSED_AFTER_KEY: ReadonlySet<string> = new Set(['forbidden', 'tenant_mismatch', 'invalid_tenant']);

/**
 * authorizeIdentity, except that a refusal of a key that did authenticate (its role, its tenant)
 * comes back with the caller to charge (the key's tenant, none for a `*` key) instead of being
 * thrown: CONTRACT §2 counts every authenticated request against its tenant, so a key looping on
 * 403s is rate limited like any other (P172). Any other refusal is thrown.
 */
export function authorizeCharging(id: KeyIdentity | null, route: RouteId, header: string | undefined): { caller: Caller; refused?: ApiError } {
  try {
    return { caller: authorizeIdentity(id, route, header) };
  } catch (err) {
    if (!id || !(err instanceof ApiError) || !REFUSED_AFTER_KEY.has(err.code)) throw err;
    return { caller: { tenant: id.tenant === ANY_TENANT ? undefined : id.tenant, keyTenant: id.tenant, role: id.role, principalId: id.principalId }, refused: err };
  }
}

/**
 * Transport-neutral auth (gRPC): key → identity, tenant binding, role, with `charge` run for the
 * caller before the call goes on, and for a refused authenticated request (authorizeCharging)
 * before its refusal is thrown; `charge` throwing (429) answers instead. Throws ApiError.
 */
export async function authenticateCharged(keys: KeyStore, route: RouteId, cred: Credentials, charge: (c: Caller) => Promise<void>): Promise<Caller> {
  const { caller, refused } = authorizeCharging(await identify(keys, cred), route, cred.tenantHeader);
  await charge(caller);
  if (refused) throw refused;
  return caller;
}

/**
 * The caller, for the handlers after it. A request refused for its role or tenant (P172) goes on
 * to the rate limit with its key's tenant as caller, and `answerRefusal` then throws the refusal.
 */
export function authorize(keys: KeyStore, route: RouteId): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const cred = presentedCredentials(req);
    const { caller, refused } = authorizeCharging(await identify(keys, cred), route, cred.tenantHeader);
    res.locals['caller'] = caller;
    if (refused) res.locals['refused'] = refused;
    next();
  };
}

/** After the rate limit: answers the refusal authorize deferred (P172). */
export const answerRefusal: RequestHandler = (_req: Request, res: Response, next: NextFunction) => {
  const refused = res.locals['refused'] as unknown;
  if (refused !== undefined) throw refused;
  next();
};
