// Runs every project's tests in one jest process pool.
module.exports = {
  // tools/e2e/jest.chaos.cjs: the scheduler HA chaos suite (real processes, a few minutes).
  projects: ['<rootDir>/libs/*/jest.config.cjs', '<rootDir>/apps/*/jest.config.cjs', '<rootDir>/tools/*/jest.config.cjs', '<rootDir>/tools/e2e/jest.chaos.cjs'],
  // Jest applies the timeout of the root config to every project; integration and
  // e2e tests start real servers and processes (their own waits are bounded).
  testTimeout: 180_000,
  // A worker whose last suite is done gets END and leaves its event loop within 10 ms, but a
  // worker that ran ~50 suites holds 1-1.2 GB, and tearing that process down took 500-540 ms on
  // a loaded 2-core VM: past jest's default 500 ms, so jest killed it and printed "A worker
  // process has failed to exit gracefully" although nothing was left open (docs/development.md).
  // A live handle still holds a worker past this bound and is still reported.
  workerGracefulExitTimeout: 5_000,
  reporters: ['default', '<rootDir>/tools/scripts/count-reporter.cjs'],
};
