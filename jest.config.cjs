// Runs every project's tests in one jest process pool.
module.exports = {
  projects: ['<rootDir>/libs/*/jest.config.cjs', '<rootDir>/apps/*/jest.config.cjs', '<rootDir>/tools/*/jest.config.cjs'],
  reporters: ['default', '<rootDir>/tools/scripts/count-reporter.cjs'],
};
