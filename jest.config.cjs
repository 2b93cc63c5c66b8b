// Runs every project's tests in one jest process pool.
module.exports = {
  // tools/e2e/jest.chaos.cjs: the scheduler HA chaos suite (real processes, a few minutes).
  projects: ['<rootDir>/libs/*/jest.config.cjs', '<rootDir>/apps/*/jest.config.cjs', '<rootDir>/tools/*/jest.config.cjs', '<rootDir>/tools/e2e/jest.chaos.cjs'],
  // Jest applies the timeout of the root config to every project; integration and
  // e2e tests start real servers and processes (their own waits are bounded).
  testTimeout: 180_000,
  reporters: ['default', '<rootDir>/tools/scripts/count-reporter.cjs'],
};
