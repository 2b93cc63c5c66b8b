// THE role table (D29): every authenticated route is declared here and only
// here. app.ts refuses to mount a /api/v1 route that has no entry, so a new
// route cannot silently go out unprotected.
import type { Role } from './keys';

export const ROUTE_ROLES = {
  'POST /api/v1/jobs': 'operator',
  'GET /api/v1/jobs/:id': 'viewer',
} as const satisfies Record<string, Role>;

export type RouteId = keyof typeof ROUTE_ROLES;

export function requiredRole(route: RouteId): Role {
  return ROUTE_ROLES[route];
}
