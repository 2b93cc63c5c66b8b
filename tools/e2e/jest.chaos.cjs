// The HA chaos suites: ha.spec (issue 3: two schedulers, two gateways, echo
// workers, SIGKILL / SIGSTOP / Redis pause / worker death / warm start),
// gateway-kill.spec (a gateway SIGKILLed with submits in flight),
// redis-cluster.spec (the stack on a 6-node Redis Cluster), nats-cluster.spec
// (on a 3-node JetStream cluster whose stream leader is killed),
// nats-restart.spec (its one nats-server killed and restarted, then frozen),
// redis-restart.spec (its one redis-server killed and restarted empty),
// redis-aof-restart.spec (a Redis with AOF killed and restarted on its data) and
// worker-freeze.spec (an echo worker frozen under load, within and past the worker TTL) and
// clock-skew.spec (a reconciler leader 60 s ahead, a gateway 30 s behind, P241), executions
// counted from the workers' logs. Part of `npm test` (a project of
// the root jest.config.cjs); alone: `npm run build && npm run test:chaos`.
module.exports = {
  ...require('../../jest.preset.cjs'),
  displayName: 'chaos',
  rootDir: __dirname,
  testMatch: ['<rootDir>/chaos/**/*.spec.ts'],
  testTimeout: 300_000,
};
