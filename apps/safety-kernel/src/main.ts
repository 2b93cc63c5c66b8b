import { runService } from '@cordum/service-kit';
import { SERVICE_NAME, loadSafetyKernelConfig, withInitialPolicy } from './config';
import { createSafetyKernel } from './kernel';

runService({
  name: SERVICE_NAME,
  load: (env) => withInitialPolicy(loadSafetyKernelConfig(env)),
  create: (config, deps) => createSafetyKernel(config, deps),
});
