import { BusError, isTransientJsError } from './errors';
import { monoNow } from './mono';
import type { BusMetrics } from './metrics';

export interface PublishDeps {
  /** One JetStream publish with its ack (JsPublisher.publish); rejects with a nats.js error code. */
  send: (subject: string, data: Uint8Array, msgId: string | undefined, timeoutMs: number) => Promise<void>;
  metrics: BusMetrics;
  isClosed: () => boolean;
  retryBudgetMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * JetStream publish retried for ≤ retryBudgetMs (2 s, D43) with the SAME msg id, so
 * a publish that did land but whose ack was lost is de-duplicated by the stream.
 */
export async function publishWithRetry(deps: PublishDeps, subject: string, data: Uint8Array, msgId: string | undefined): Promise<void> {
  const budgetMs = deps.retryBudgetMs ?? 2_000;
  const deadline = monoNow() + budgetMs;
  let attempt = 0;
  for (;;) {
    if (deps.isClosed()) throw new BusError('bus_closed', `publish ${subject}: bus is closed`);
    attempt += 1;
    const remaining = deadline - monoNow();
    try {
      await deps.send(subject, data, msgId, Math.max(250, Math.min(1_000, remaining)));
      return;
    } catch (err) {
      // Worth retrying: the stream/leader is not there yet (503), or the ack did not arrive in time.
      const retryable = isTransientJsError(err);
      const left = deadline - monoNow();
      if (!retryable || left <= 0) {
        throw new BusError('bus_publish_failed', `publish ${subject} failed after ${attempt} attempt(s): ${(err as Error).message}`, { cause: err });
      }
      deps.metrics.publishRetries.inc({ subject });
      // Jittered short pause; never past the budget.
      await sleep(Math.min(left, 50 + Math.floor(Math.random() * 100) * Math.min(attempt, 4)));
    }
  }
}
