export { freePort, freePorts } from './ports';
export { waitFor, Latch, CountDown } from './wait';
export { ManagedProcess, startProcess, spawnService, serviceBundle, stopAll, repoRoot } from './process';
export { startRedis, startNats, startRedisCluster, startNatsCluster, canConnect, type TestServer, type TestCluster } from './servers';
