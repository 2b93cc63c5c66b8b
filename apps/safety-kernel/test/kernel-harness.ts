import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, type Bus } from '@cordum/bus';
import { createConfigStore, publishConfigChanged, type ConfigStore } from '@cordum/config-overlay';
import { SafetyKernel, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { closeRedis, createRedis } from '@cordum/redis';
import { createLogger, createMetricsRegistry, type Registry } from '@cordum/service-kit';
import { startNats, startRedis, type TestServer } from '@cordum/testing';
import { loadSafetyKernelConfig, withInitialPolicy } from '../src/config';
import { createSafetyKernel, type SafetyKernelService } from '../src/kernel';

export type SafetyKernelMethods = typeof SafetyKernel extends { method: infer M } ? M : never;

/** One in-process kernel replica with its own registry, log capture and gRPC client. */
export interface KernelReplica {
  kernel: SafetyKernelService;
  client: GrpcClient<SafetyKernelMethods>;
  registry: Registry;
  logs: string[];
  /** Value of an unlabelled (or first-labelled) counter/gauge, 0 when absent. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export async function startReplica(env: Record<string, string>, instanceId: string, deps: { now?: () => number } = {}): Promise<KernelReplica> {
  const config = withInitialPolicy(
    loadSafetyKernelConfig({ SAFETY_KERNEL_GRPC_ADDR: '127.0.0.1:0', SAFETY_KERNEL_HTTP_ADDR: '127.0.0.1:0', CORDUM_INSTANCE_ID: instanceId, ...env }),
  );
  const logs: string[] = [];
  const logger = createLogger({ service: 'safety-kernel', instance: instanceId, level: 'info', write: (l) => void logs.push(l) });
  const registry = createMetricsRegistry({ service: 'safety-kernel', pod: instanceId });
  const kernel = createSafetyKernel(config, { logger, registry, reloadOnSighup: false, ...deps });
  await kernel.start();
  const client = grpcClientFor(SafetyKernel, `127.0.0.1:${kernel.grpcPort}`, { defaultDeadlineMs: 5000 });
  return {
    kernel,
    client,
    registry,
    logs,
    async metric(name, labels = {}) {
      const m = registry.getSingleMetric(name);
      if (!m) return 0;
      const v = (await m.get()).values.find((x) => Object.entries(labels).every(([k, want]) => String(x.labels[k]) === want));
      return v?.value ?? 0;
    },
    async close() {
      client.close();
      await kernel.stop();
    },
  };
}

/** Redis + NATS, a policy file, and a config writer: what the policy-bundle specs share. */
export interface BundleRig {
  redis: TestServer;
  nats: TestServer;
  store: ConfigStore;
  bus: Bus;
  dir: string;
  /** REDIS_URL, NATS_URL and SAFETY_POLICY_PATH for startReplica. */
  env: Record<string, string>;
  /**
   * Merges `safety.bundles` into cfg:system:default and, with `notify`, publishes sys.config.changed.
   * `validate: false` stores what every writer now refuses (P44), as a hand edit in Redis or an older gateway could.
   */
  writeBundles(bundles: Record<string, unknown>, notify: boolean, validate?: boolean): Promise<number>;
  close(): Promise<void>;
}

export async function startBundleRig(filePolicy: string, name: string): Promise<BundleRig> {
  const [redis, nats] = await Promise.all([startRedis(), startNats()]);
  const dir = mkdtempSync(join(tmpdir(), `cordum-sk-${name}-`));
  const policyPath = join(dir, 'safety.yaml');
  writeFileSync(policyPath, filePolicy);
  const rc = createRedis({ url: redis.url, clusterAddresses: [], poolSize: 1, minIdleConns: 0 });
  const store = createConfigStore(rc);
  const bus = await connectBus({ servers: [nats.url], name, logger: createLogger({ service: 'test', instance: 'test', level: 'error', write: () => undefined }) });
  return {
    redis,
    nats,
    store,
    bus,
    dir,
    env: { REDIS_URL: redis.url, NATS_URL: nats.url, SAFETY_POLICY_PATH: policyPath },
    async writeBundles(bundles, notify, validate = true) {
      const { revision } = await store.mergePatch('system', 'default', { safety: { bundles } as never }, { validate });
      if (notify) await publishConfigChanged(bus, { scope: 'system', scopeId: 'default', revision, senderId: 'test' });
      return revision;
    },
    async close() {
      await bus.close();
      await closeRedis(rc);
      await redis.stop();
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
