// The scheduler HA chaos suite (issue 3): two schedulers, two gateways, echo
// workers, SIGKILL / SIGSTOP / worker death / warm start, executions counted
// from the workers' logs. Run with `npm run test:chaos` after `npm run build`.
// Not yet part of `npm test`: it currently exposes an unfixed crash (a scheduler
// woken by SIGCONT dies on an unhandled ioredis "Command timed out") and
// intermittent TIMEOUTs after SIGKILL at short dispatch timeouts; it joins CI
// once those are fixed (see apps/scheduler/README.md, "Known gaps").
module.exports = {
  ...require('../../jest.preset.cjs'),
  displayName: 'chaos',
  rootDir: __dirname,
  testMatch: ['<rootDir>/chaos/**/*.spec.ts'],
  testTimeout: 300_000,
};
