// Entry point: parse env once, build the gateway, wire signals (ARCHITECTURE: main.ts only calls the composition root).
import { acceptCommandLine, exitOnConfigError, processEnv, Shutdown, errorText } from '@cordum/service-kit';
import { loadGatewayConfig } from './config';
import { createGateway } from './gateway';

exitOnConfigError(async () => {
  if (!acceptCommandLine({ name: 'api-gateway' })) return; // --help / a stray argument: exit before config or connections
  const config = loadGatewayConfig(processEnv());
  const gateway = createGateway(config);
  const shutdown = new Shutdown({ logger: gateway.logger });
  shutdown.add('api-gateway', () => gateway.stop());
  shutdown.listen();
  try {
    await gateway.start();
  } catch (err) {
    gateway.logger.error('api-gateway failed to start', { err: errorText(err) });
    process.exitCode = 1;
    await shutdown.run();
    process.exit(1);
  }
});
