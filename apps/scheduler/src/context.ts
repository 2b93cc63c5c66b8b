import type { Bus } from '@cordum/bus';
import type { JobStore } from '@cordum/job-store';
import type { Locks } from '@cordum/locks';
import type { BusPacket } from '@cordum/protocol';
import type { Logger } from '@cordum/service-kit';
import type { SchedulerConfig } from './config';
import type { SchedulerMetrics } from './metrics';
import type { CapacityWaiters } from './capacity-waiters';
import type { WorkerRegistry } from './registry';
import type { PoolsConfig, TimeoutsConfig } from './routing-config';
import type { FailModes, SafetyChecker } from './safety';
import type { Verifier } from './verifier';

/** The queue group (and durable name prefix) every scheduler replica consumes and subscribes with. */
export const QUEUE = 'cordum-scheduler';

/** What the handler modules share; built once by the composition root. */
export interface SchedulerContext {
  config: SchedulerConfig;
  instanceId: string;
  logger: Logger;
  store: JobStore;
  locks: Locks;
  bus: Bus;
  workers: WorkerRegistry;
  /** Jobs waiting for worker capacity, for a freed slot to drive at once (P225). */
  capacityWaiters: CapacityWaiters;
  safety: SafetyChecker;
  metrics: SchedulerMetrics;
  /** The applied pools section; `setPools` on the scheduler replaces it on config reload. */
  pools(): PoolsConfig;
  /** The applied timeouts section (reconciler); `setTimeouts` on the scheduler replaces it live. */
  timeouts(): TimeoutsConfig;
  /** The applied fail modes (`scheduler` section); `setFailModes` on the scheduler replaces them live. */
  failModes(): FailModes;
  /** Delivery verification (BEHAVIOURS §3): told about every published attempt. */
  verifier: Pick<Verifier, 'track' | 'delivered'>;
  /** Decodes a packet a worker sent: valid (P57), and signed when CAP_VERIFY_KEY_FILE is set (P61). */
  decodeWorkerPacket(bytes: Uint8Array): BusPacket;
  /** Encodes a packet for workers: signed when CAP_SIGNING_KEY_FILE is set (P61). */
  encodeForWorkers(p: BusPacket): Uint8Array;
}
