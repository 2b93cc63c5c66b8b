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

/** Transport-neutral auth (HTTP, WebSocket, gRPC): key → identity, tenant binding, role. Throws ApiError. */
export async function authenticate(keys: KeyStore, route: RouteId, cred: Credentials): Promise<Caller> {
  return authorizeIdentity(await identify(keys, cred), route, cred.tenantHeader);
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

export function authorize(keys: KeyStore, route: RouteId): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    res.locals['caller'] = await authenticate(keys, route, presentedCredentials(req));
    next();
  };
}
