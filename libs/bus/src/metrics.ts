import { Counter, type Registry } from 'prom-client';

export interface BusMetrics {
  undecodable: Counter<'subject'>;
  redeliveries: Counter<'subject'>;
  handlerErrors: Counter<'subject'>;
  publishRetries: Counter<'subject'>;
  held: Counter<'subject'>;
}

// Several Bus instances may share one process registry (tests, or a service with two
// connections); reuse an already registered counter instead of throwing on the duplicate name.
function counter(registry: Registry | undefined, name: string, help: string): Counter<'subject'> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Counter<'subject'>;
  return new Counter({ name, help, labelNames: ['subject'], registers: registry ? [registry] : [] });
}

export function busMetrics(registry?: Registry): BusMetrics {
  return {
    undecodable: counter(registry, 'cordum_bus_undecodable_total', 'Packets terminated because they could not be decoded after 3 deliveries'),
    redeliveries: counter(registry, 'cordum_bus_redeliveries_total', 'JetStream messages received with a delivery count above 1'),
    handlerErrors: counter(registry, 'cordum_bus_handler_errors_total', 'Consumer handlers that threw (message nak-ed for redelivery)'),
    publishRetries: counter(registry, 'cordum_bus_publish_retries_total', 'JetStream publish attempts retried with the same msg id (D43)'),
    held: counter(registry, 'cordum_bus_held_total', 'Messages kept and retried in process because their handler found a shared dependency (Redis) down, instead of spending D8 deliveries'),
  };
}
