// Shared jest settings for every project. ts-jest with isolatedModules transpiles
// each file alone (type errors are caught by `npm run typecheck`, not by jest).
const path = require('node:path');
const { pathsToModuleNameMapper } = require('ts-jest');
const { compilerOptions } = require('./tsconfig.base.json');

module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: path.join(__dirname, 'tsconfig.spec.json') }],
    '^.+\\.(lua|yaml)$': path.join(__dirname, 'tools/scripts/text-transform.cjs'),
  },
  moduleFileExtensions: ['ts', 'js', 'json', 'lua', 'yaml'],
  moduleNameMapper: pathsToModuleNameMapper(compilerOptions.paths, { prefix: __dirname + '/' }),
  testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/test/**/*.spec.ts'],
  testTimeout: 60_000,
};
