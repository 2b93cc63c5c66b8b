// An audit event as exported on `sys.audit.export` (CONTRACT §3): a SystemAlert whose code is
// `audit.<action>`, with who did what to which target, and when, in its details. One builder so
// every service that audits (the gateway's mutations, the scheduler's own decisions, P336) writes
// the same shape for audit exporters.
import { create } from '@bufbuild/protobuf';
import { AlertSeverity, SystemAlertSchema, type SystemAlert } from './gen/cordum/agent/v1/alert_pb';

export interface AuditFields {
  /** `approval.approve`, `dlq.delete`, … */
  action: string;
  tenant: string;
  principal_id: string;
  target: string;
  details?: Record<string, string>;
  /** A unique id of the event. */
  id: string;
  /** RFC 3339, in the cluster's (Redis's) time. */
  at: string;
}

export function auditAlert(e: AuditFields, o: { component: string; instanceId: string }): SystemAlert {
  return create(SystemAlertSchema, {
    level: 'INFO',
    message: e.action,
    component: o.component,
    code: `audit.${e.action}`,
    severity: AlertSeverity.INFO,
    sourceComponent: o.instanceId,
    details: { ...(e.details ?? {}), audit_id: e.id, at: e.at, tenant: e.tenant, principal_id: e.principal_id, target: e.target },
  });
}
