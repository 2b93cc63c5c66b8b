import { SafetyKernel, grpcClientFor, type GrpcClient } from '@cordum/protocol';
import { createLogger, createMetricsRegistry, type Registry } from '@cordum/service-kit';
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

export async function startReplica(env: Record<string, string>, instanceId: string): Promise<KernelReplica> {
  const config = withInitialPolicy(
    loadSafetyKernelConfig({ SAFETY_KERNEL_GRPC_ADDR: '127.0.0.1:0', SAFETY_KERNEL_HTTP_ADDR: '127.0.0.1:0', CORDUM_INSTANCE_ID: instanceId, ...env }),
  );
  const logs: string[] = [];
  const logger = createLogger({ service: 'safety-kernel', instance: instanceId, level: 'info', write: (l) => void logs.push(l) });
  const registry = createMetricsRegistry({ service: 'safety-kernel', pod: instanceId });
  const kernel = createSafetyKernel(config, { logger, registry, reloadOnSighup: false });
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
