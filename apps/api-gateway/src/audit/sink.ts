// Audit trail of gateway mutations (cancel, DLQ retry/delete, config writes).
// AUDIT_TRANSPORT=nats publishes each event as a SystemAlert on the durable
// sys.audit.export stream (consumers: audit-exporters); otherwise events go to
// a bounded in-memory ring (newest kept) so an unconfigured audit path can
// never grow memory, and to the log at info (`audit`, P251): the ring has no reader
// outside tests, and who retried, deleted or cancelled what must be readable
// somewhere without an exporter. Export is best effort: a failed publish is logged and
// counted, the user's request has already succeeded.
import { randomUUID } from 'node:crypto';
import { subjects } from '@cordum/bus';
import { auditAlert, encodePacket, newPacket } from '@cordum/protocol';
import type { Logger } from '@cordum/service-kit';
import { clusterNow } from '@cordum/redis';
import { errorText } from '@cordum/service-kit';

export interface AuditEvent {
  action: string;
  tenant: string;
  principal_id: string;
  target: string;
  details?: Record<string, string>;
}

export interface AuditRecord extends AuditEvent {
  id: string;
  at: string;
}

export interface AuditSink {
  record(e: AuditEvent): void;
  /** Local ring contents (empty for the nats transport); newest last. */
  recent(): AuditRecord[];
  /** Waits for exports already started (shutdown, tests). */
  flush(): Promise<void>;
}

export interface AuditPublisher {
  publish(subject: string, data: Uint8Array, opts?: { msgId?: string }): Promise<void>;
}

export function createAuditSink(o: { transport: 'local' | 'nats'; bufferSize: number; bus: AuditPublisher; instanceId: string; logger: Logger }): AuditSink {
  const ring: AuditRecord[] = [];
  const pending = new Set<Promise<void>>();
  return {
    record(e) {
      const rec: AuditRecord = { ...e, id: randomUUID(), at: new Date(clusterNow()).toISOString() }; // P300: in Redis's time, as job timestamps
      if (o.transport === 'local') {
        o.logger.info('audit', { audit_id: rec.id, action: rec.action, tenant: rec.tenant, principal_id: rec.principal_id, target: rec.target, ...(rec.details ? { details: rec.details } : {}) });
        ring.push(rec);
        if (ring.length > o.bufferSize) ring.splice(0, ring.length - o.bufferSize);
        return;
      }
      const alert = auditAlert(rec, { component: 'api-gateway', instanceId: o.instanceId });
      const p = o.bus
        .publish(subjects.audit, encodePacket(newPacket(o.instanceId, { case: 'alert', value: alert })), { msgId: `${subjects.audit}:${rec.id}` })
        .catch((err: unknown) => o.logger.warn('audit export failed', { action: rec.action, err: errorText(err) }))
        .finally(() => pending.delete(p));
      pending.add(p);
    },
    recent: () => [...ring],
    async flush() {
      await Promise.all([...pending]);
    },
  };
}

/**
 * Runs a write whose failure can leave its outcome unknown: a Redis command that timed out may
 * still run once Redis answers (a frozen or slow Redis), and the client's retry then finds it done
 * (409, job_terminal, already_approved) and nothing audits it. So a failure that is not a definite
 * answer (any 5xx, or an error that is not an ApiError) records the event with
 * `outcome: unknown` and the error code before it is rethrown (P182). The caller records the
 * success as before.
 */
export async function auditIfUnknown<T>(audit: AuditSink, e: AuditEvent, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    const status = err instanceof Error && 'status' in err && typeof err.status === 'number' ? err.status : 500;
    if (status >= 500) {
      const code = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'internal';
      audit.record({ ...e, details: { ...(e.details ?? {}), outcome: 'unknown', error: code } });
    }
    throw err;
  }
}
