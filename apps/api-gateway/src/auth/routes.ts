// THE role table (D29): every authenticated route is declared here and only
// here. app.ts refuses to mount a /api/v1 route that has no entry, so a new
// route cannot silently go out unprotected.
import type { Role } from './keys';

export const ROUTE_ROLES = {
  'POST /api/v1/jobs': 'operator',
  'GET /api/v1/jobs/:id': 'viewer',
  'GET /api/v1/jobs': 'viewer',
  'POST /api/v1/jobs/:id/cancel': 'operator',
  'GET /api/v1/jobs/:id/decisions': 'viewer',
  'GET /api/v1/approvals': 'viewer',
  'POST /api/v1/approvals/:job_id/approve': 'operator',
  'POST /api/v1/approvals/:job_id/reject': 'operator',
  // Safety-kernel passthrough: what-if queries are POSTs (operator, D29), reads are viewer.
  'POST /api/v1/policy/evaluate': 'operator',
  'POST /api/v1/policy/explain': 'operator',
  'POST /api/v1/policy/simulate': 'operator',
  'GET /api/v1/policy/snapshots': 'viewer',
  'GET /api/v1/policy/rules': 'viewer',
  'GET /api/v1/dlq': 'viewer',
  'POST /api/v1/dlq/:job_id/retry': 'operator',
  'DELETE /api/v1/dlq/:job_id': 'admin',
  'GET /api/v1/workers': 'viewer',
  'GET /api/v1/workers/:id': 'viewer',
  'GET /api/v1/pools': 'viewer',
  'GET /api/v1/topics': 'viewer',
  'GET /api/v1/config': 'viewer',
  'PUT /api/v1/config': 'admin',
  'GET /api/v1/config/effective': 'viewer',
  'GET /api/v1/config/status': 'admin',
  'GET /api/v1/status': 'admin',
  'GET /api/v1/auth/keys': 'admin',
  'POST /api/v1/auth/keys': 'admin',
  'DELETE /api/v1/auth/keys/:id': 'admin',
  // WebSocket upgrade; a plain GET is answered 426 upgrade_required.
  'GET /api/v1/stream': 'viewer',
} as const satisfies Record<string, Role>;

export type RouteId = keyof typeof ROUTE_ROLES;

export function requiredRole(route: RouteId): Role {
  return ROUTE_ROLES[route];
}
