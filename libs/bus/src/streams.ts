import { DiscardPolicy, RetentionPolicy, StorageType, nanos, type JetStreamManager, type NatsConnection, type StreamConfig, type StreamInfo } from 'nats';
import { BusError, jsApiErrCode } from './errors';
import { STREAM_SYS, STREAM_SYS_SUBJECTS } from './subjects';
import type { BusLogger } from './types';

const DAY_MS = 24 * 60 * 60 * 1000;
const GIB = 1024 * 1024 * 1024;
// JetStream API err_codes we branch on (nats-server errors.json).
const ERR_STREAM_NAME_IN_USE = 10058;
const ERR_REPLICAS_NOT_SUPPORTED = 10074; // "replicas > 1 not supported in non-clustered mode"
const ERR_INSUFFICIENT_RESOURCES = 10023;
const ERR_NO_SUITABLE_PEERS = 10005;

/**
 * Cluster size as a hint for num_replicas. A standalone server has no `cluster` in
 * its INFO, so 1. In a cluster, INFO gossips every member's client URL in
 * `connect_urls`; the configured server list is the floor when gossip is off
 * (`no_advertise`) or not yet received. The hint may overshoot (a URL list naming
 * more nodes than are up): creation then steps the replica count down on
 * "insufficient resources", so the server has the last word.
 */
export function clusterSizeHint(nc: NatsConnection, configuredServers: number): number {
  const info = nc.info;
  if (!info?.cluster) return 1;
  const gossiped = new Set(info.connect_urls ?? []).size;
  return Math.max(gossiped, configuredServers, 1);
}

function sysConfig(replicas: number): Partial<StreamConfig> & { name: string } {
  return {
    name: STREAM_SYS,
    subjects: [...STREAM_SYS_SUBJECTS],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(DAY_MS),
    max_bytes: GIB,
    discard: DiscardPolicy.Old,
    num_replicas: replicas,
    duplicate_window: nanos(2 * 60 * 1000),
  };
}

function sameSettings(have: StreamConfig, want: Partial<StreamConfig>): boolean {
  const subjectsEqual = [...(have.subjects ?? [])].sort().join(',') === [...(want.subjects ?? [])].sort().join(',');
  return subjectsEqual && have.max_age === want.max_age && have.max_bytes === want.max_bytes && have.discard === want.discard
    && have.retention === want.retention && have.num_replicas === want.num_replicas;
}

async function info(jsm: JetStreamManager): Promise<StreamInfo | null> {
  try {
    return await jsm.streams.info(STREAM_SYS);
  } catch (err) {
    if (jsApiErrCode(err) === 10059 /* stream not found */) return null;
    throw err;
  }
}

/**
 * Creates or updates CORDUM_SYS (D10). Safe when every replica of every service
 * calls it concurrently: add is idempotent for an identical config, "name in use"
 * falls through to compare-and-update, and updates converge on the same config.
 * An existing stream's replica count is never lowered: a temporarily smaller
 * cluster (a node down) must not shrink the stream.
 */
export async function ensureSysStream(jsm: JetStreamManager, sizeHint: number, logger: BusLogger): Promise<StreamInfo> {
  try {
    const existing = await info(jsm);
    let replicas = Math.min(3, Math.max(1, sizeHint));
    if (existing) {
      replicas = Math.max(replicas, existing.config.num_replicas);
      const want = sysConfig(replicas);
      if (sameSettings(existing.config, want)) return existing;
      logger.info('bus: updating stream', { stream: STREAM_SYS, replicas });
      return await jsm.streams.update(STREAM_SYS, { ...existing.config, ...want });
    }
    for (;;) {
      try {
        const created = await jsm.streams.add(sysConfig(replicas));
        logger.info('bus: stream created', { stream: STREAM_SYS, replicas });
        return created;
      } catch (err) {
        const code = jsApiErrCode(err);
        if (code === ERR_STREAM_NAME_IN_USE) return await ensureSysStream(jsm, sizeHint, logger); // a concurrent creator won
        const tooMany = code === ERR_REPLICAS_NOT_SUPPORTED || code === ERR_INSUFFICIENT_RESOURCES || code === ERR_NO_SUITABLE_PEERS;
        if (tooMany && replicas > 1) {
          replicas = code === ERR_REPLICAS_NOT_SUPPORTED ? 1 : replicas - 1;
          logger.warn('bus: fewer replicas available than hinted', { stream: STREAM_SYS, replicas });
          continue;
        }
        throw err;
      }
    }
  } catch (err) {
    if (err instanceof BusError) throw err;
    throw new BusError('bus_stream_failed', `ensure stream ${STREAM_SYS}: ${(err as Error).message}`, { cause: err });
  }
}
