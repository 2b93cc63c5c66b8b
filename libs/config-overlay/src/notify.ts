import { subjects, type Bus } from '@cordum/bus';
import { AlertSeverity, SystemAlertSchema, create, decodePacket, encodePacket, newPacket } from '@cordum/protocol';

export interface ConfigChange {
  scope: string;
  scopeId: string;
  revision: number;
}

export const CONFIG_CHANGED_CODE = 'config_changed';

/**
 * Broadcast `sys.config.changed` (core NATS, every replica receives it) after a config write.
 * The payload is only a hint: watchers always re-read Redis (seed 001: message skew must not
 * create divergent state), so a lost or stale notification is harmless beyond latency.
 */
export async function publishConfigChanged(bus: Bus, change: ConfigChange & { senderId?: string }): Promise<void> {
  const alert = create(SystemAlertSchema, {
    level: 'INFO',
    message: 'config changed',
    component: 'config',
    code: CONFIG_CHANGED_CODE,
    severity: AlertSeverity.INFO,
    details: { scope: change.scope, scope_id: change.scopeId, revision: String(change.revision) },
  });
  bus.publishCore(subjects.configChanged, encodePacket(newPacket(change.senderId ?? 'config-overlay', { case: 'alert', value: alert })));
  await bus.flush();
}

/** The change a notification announces, or null when it is not a config-change alert. */
export function decodeConfigChanged(bytes: Uint8Array): ConfigChange | null {
  const p = decodePacket(bytes);
  if (p.payload.case !== 'alert') return null;
  const d = p.payload.value.details;
  const revision = Number(d['revision']);
  return { scope: d['scope'] ?? '', scopeId: d['scope_id'] ?? '', revision: Number.isFinite(revision) ? revision : -1 };
}
