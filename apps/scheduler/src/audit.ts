// P336: the scheduler's own decisions in the audit trail. The gateway audits what people and keys
// do (approve, reject, cancel, …); a held job that nobody answered is ended by the scheduler
// (P99), which wrote no event, so the trail of a hold ended nowhere. The event has the gateway's
// shape (auditAlert): a line `audit` in the log at info, as the gateway's local transport writes,
// and a SystemAlert on sys.audit.export for audit exporters (as the fail-open alert, P18).
import { randomUUID } from 'node:crypto';
import { subjects } from '@cordum/bus';
import { auditAlert, encodePacket, newPacket, type AuditFields } from '@cordum/protocol';
import { clusterNow } from '@cordum/redis';
import { errorText } from '@cordum/service-kit';
import type { SchedulerContext } from './context';

/** Who the scheduler's own audit events name as the actor. */
export const SCHEDULER_PRINCIPAL = 'system:scheduler';

/** Logs the event and exports it; never throws, never waits for the export. */
export function recordAudit(ctx: Pick<SchedulerContext, 'bus' | 'logger' | 'instanceId'>, e: Omit<AuditFields, 'id' | 'at' | 'principal_id'>): void {
  const rec: AuditFields = { ...e, principal_id: SCHEDULER_PRINCIPAL, id: randomUUID(), at: new Date(clusterNow()).toISOString() };
  ctx.logger.info('audit', { audit_id: rec.id, action: rec.action, tenant: rec.tenant, principal_id: rec.principal_id, target: rec.target, ...(rec.details ? { details: rec.details } : {}) });
  const packet = encodePacket(newPacket(ctx.instanceId, { case: 'alert', value: auditAlert(rec, { component: 'scheduler', instanceId: ctx.instanceId }) }));
  void ctx.bus.publish(subjects.audit, packet, { msgId: `${subjects.audit}:${rec.id}` }).catch((err: unknown) => ctx.logger.warn('audit export failed', { action: rec.action, err: errorText(err) }));
}
