import { subjects, type Bus } from '@cordum/bus';
import { AlertSeverity, SystemAlertSchema, create, decodePacket, encodePacket, newPacket } from '@cordum/protocol';

export interface ConfigChange {
  scope: string;
  scopeId: string;
  revision: number;
}

export const CONFIG_CHANGED_CODE = 'config_changed';

/**
 * How long publishConfigChanged waits for NATS to confirm the notification (the 2 s a JetStream
 * publish is retried for, D43). A flush has no deadline of its own: with the server frozen or the
 * link black-holed it waits until nats.js calls the connection stale (10–15 s, P260), and a PUT that
 * had committed answered only then. The poll covers a notification that is lost.
 */
export const CONFIG_NOTIFY_FLUSH_BUDGET_MS = 2_000;

/**
 * Broadcast `sys.config.changed` (core NATS, every replica receives it) after a config write.
 * The payload is only a hint: watchers always re-read Redis (seed 001: message skew must not
 * create divergent state), so a lost or stale notification is harmless beyond latency. Rejects
 * when NATS has not confirmed it within `flushBudgetMs` (CONFIG_NOTIFY_FLUSH_BUDGET_MS).
 */
export async function publishConfigChanged(bus: Bus, change: ConfigChange & { senderId?: string }, o: { flushBudgetMs?: number } = {}): Promise<void> {
  const alert = create(SystemAlertSchema, {
    level: 'INFO',
    message: 'config changed',
    component: 'config',
    code: CONFIG_CHANGED_CODE,
    severity: AlertSeverity.INFO,
    details: { scope: change.scope, scope_id: change.scopeId, revision: String(change.revision) },
  });
  bus.publishCore(subjects.configChanged, encodePacket(newPacket(change.senderId ?? 'config-overlay', { case: 'alert', value: alert })));
  await boundedFlush(bus, o.flushBudgetMs ?? CONFIG_NOTIFY_FLUSH_BUDGET_MS);
}

/**
 * `bus.flush()`, rejecting once `budgetMs` has passed without the server's PONG. The flush itself
 * runs on (the bus shares it with every flush of the turn) and its late outcome is dropped.
 */
export async function boundedFlush(bus: Bus, budgetMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`NATS did not confirm within ${budgetMs} ms (flush unanswered)`)), budgetMs);
  });
  try {
    await Promise.race([bus.flush(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The change a notification announces, or null when it is not a config-change alert. */
export function decodeConfigChanged(bytes: Uint8Array): ConfigChange | null {
  const p = decodePacket(bytes);
  if (p.payload.case !== 'alert') return null;
  const d = p.payload.value.details;
  const revision = Number(d['revision']);
  return { scope: d['scope'] ?? '', scopeId: d['scope_id'] ?? '', revision: Number.isFinite(revision) ? revision : -1 };
}
