// Express middleware: runs after authorize(), counts every authenticated
// /api/v1 request against its tenant, else its client IP (CONTRACT §2).
import { isIP } from 'node:net';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { actingTenant, caller, type Caller } from '../auth/middleware';
import { ApiError, retryAfter } from '../http/errors';
import type { RateLimiter } from './limiter';

export function limitKey(tenant: string | undefined, ip: string | undefined): string {
  return tenant !== undefined ? `tenant:${tenant}` : `ip:${ip ?? 'unknown'}`;
}

/**
 * The client address of a grpc-js peer without its port: the budget is per client, not per
 * connection (a new connection must not bring a fresh one). A grpc-js server names its peer
 * `<remoteAddress>:<port>` with the address unbracketed (`1.2.3.4:5678`, `::1:5678`, and on a
 * dual-stack listener, the default `:8080`, an IPv4 client as `::ffff:1.2.3.4:5678`); the
 * `ipv4:`/`ipv6:[…]` forms are a channel's. Before P280 an unbracketed IPv6 peer kept its port:
 * every connection its own rate-limit bucket, and every IPv4 client on a dual-stack listener
 * in one failed-login bucket (`0:0:0:0::/64`).
 */
export function peerAddress(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(bare);
  if (v6) return v6[1] as string;
  const i = bare.lastIndexOf(':');
  if (i > 0 && /^\d+$/.test(bare.slice(i + 1)) && isIP(bare.slice(0, i)) !== 0) return bare.slice(0, i);
  return bare;
}

export function rateLimitError(retryAfterMs: number): ApiError {
  return new ApiError('rate_limited', retryAfter(retryAfterMs));
}

/**
 * An admin's calls to the config API take no token (P68): `rate_limits` lives in that config, so a
 * limit written too low (`rps: 0.001`) would otherwise refuse the very write that undoes it, for as
 * long as the bucket takes to refill, and only a hand edit in Redis could fix it.
 */
export function exemptFromRateLimit(c: Caller | undefined, path: string): boolean {
  // P295: routes match case-insensitively (P171): `PUT /API/V1/CONFIG` is the same route.
  const p = path.toLowerCase();
  return c?.role === 'admin' && (p === '/api/v1/config' || p.startsWith('/api/v1/config/'));
}

/** Takes one token from the bucket of `tenant` (else of the client address `ip`); throws 429 `rate_limited` when there is none. */
export async function chargeRequest(limiter: RateLimiter, tenant: string | undefined, ip: string | undefined): Promise<void> {
  const d = await limiter.check(limitKey(tenant, ip));
  if (!d.allowed) throw rateLimitError(d.retryAfterMs);
}

/** res.locals key: the limiter that charged this request (absent when exempt, P68), for chargedActingTenant. */
const CHARGED_BY = 'chargedBy';

export function rateLimit(limiter: RateLimiter): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const c = res.locals['caller'] as Caller | undefined;
    if (exemptFromRateLimit(c, req.path)) {
      next();
      return;
    }
    await chargeRequest(limiter, c?.tenant, req.socket.remoteAddress);
    res.locals[CHARGED_BY] = limiter;
    next();
  };
}

/**
 * P270: CONTRACT §2 counts every authenticated request against its tenant. A `*` key that names the
 * tenant only in the body (no X-Tenant-ID, gRPC x-tenant-id) is charged to its client address
 * before the body is read; once the tenant is resolved (actingTenant) this charges that tenant's
 * bucket as well, so such a key cannot act in a tenant past the tenant's budget. Throws 429
 * `rate_limited`. HTTP and gRPC both call it.
 */
export async function chargeTenantNamedInBody(limiter: RateLimiter | undefined, c: Caller, tenant: string): Promise<void> {
  if (c.tenant === undefined && limiter) await chargeRequest(limiter, tenant, undefined);
}

/** actingTenant of the request's caller, with the tenant a `*` key names in the body charged (P270). */
export async function chargedActingTenant(res: Response, bodyTenant: string | undefined): Promise<{ caller: Caller; tenant: string }> {
  const c = caller(res);
  const tenant = actingTenant(c, bodyTenant);
  await chargeTenantNamedInBody(res.locals[CHARGED_BY] as RateLimiter | undefined, c, tenant);
  return { caller: c, tenant };
}
