export { freePort, freePorts } from './ports';
export { waitFor, within, Latch, CountDown } from './wait';
export { ManagedProcess, startProcess, spawnService, serviceBundle, stopAll, repoRoot } from './process';
export { startRedis, startNats, canConnect, ServerExitedError, type TestServer } from './servers';
export { startRedisCluster, type TestCluster } from './redis-cluster';
export { startNatsCluster } from './nats-cluster';
export { REDIS_BACKENDS, startRedisBackend, type RedisBackend, type RedisBackendKind } from './backends';
export { seededRandom } from './random';
export { commandCalls, callsOf, type InfoSource } from './redis-stats';
