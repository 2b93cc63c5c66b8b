// Type-aware lint for the whole workspace, plus the dependency rules of ARCHITECTURE.md.
import nx from '@nx/eslint-plugin';
import tseslint from 'typescript-eslint';

const scope = (name, allowed) => ({ sourceTag: `scope:${name}`, onlyDependOnLibsWithTags: [...allowed.map((s) => `scope:${s}`), 'type:test'] });

export default [
  { ignores: ['**/dist', '**/node_modules', '**/tmp', '**/.nx', 'libs/protocol/src/gen/**', '**/*.cjs', '**/*.mjs', 'bench/**', 'coverage/**'] },
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: false,
          allow: [],
          depConstraints: [
            { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:lib', 'type:test'] },
            { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib', 'type:test'] },
            { sourceTag: 'type:test', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:e2e', onlyDependOnLibsWithTags: ['type:lib', 'type:test'] },
            scope('protocol', []),
            scope('redis', []),
            scope('service-kit', []),
            scope('locks', ['redis']),
            scope('bus', ['protocol']),
            scope('job-store', ['redis', 'locks', 'protocol', 'bus']),
            scope('config-overlay', ['redis', 'bus', 'protocol', 'service-kit']),
            scope('worker-sdk', ['bus', 'protocol', 'redis', 'service-kit']),
            scope('testing', ['protocol', 'redis', 'bus']),
            scope('api-gateway', ['protocol', 'redis', 'bus', 'locks', 'job-store', 'service-kit', 'config-overlay']),
            scope('scheduler', ['protocol', 'redis', 'bus', 'locks', 'job-store', 'service-kit', 'config-overlay']),
            scope('safety-kernel', ['protocol', 'redis', 'bus', 'locks', 'service-kit', 'config-overlay']),
            scope('echo-worker', ['worker-sdk', 'service-kit', 'protocol', 'bus', 'redis']),
            scope('e2e', ['protocol', 'redis', 'bus', 'testing']),
          ],
        },
      ],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'Read env only in a config loader (loadConfig / config.ts).' }],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'ioredis', message: 'Only libs/redis imports ioredis.' },
            { name: 'nats', message: 'Only libs/bus imports nats.' },
            { name: '@bufbuild/protobuf', message: 'Only libs/protocol touches protobuf encoding.' },
            { name: '@cordum/testing', message: 'libs/testing is for tests only.' },
          ],
          patterns: [{ group: ['@bufbuild/protobuf/*'], message: 'Only libs/protocol touches protobuf encoding.' }],
        },
      ],
    },
  },
  // The sanctioned owners of each dependency.
  { files: ['libs/redis/src/**/*.ts'], rules: { 'no-restricted-imports': 'off' } },
  { files: ['libs/bus/src/**/*.ts'], rules: { 'no-restricted-imports': 'off' } },
  { files: ['libs/protocol/src/**/*.ts'], rules: { 'no-restricted-imports': 'off' } },
  { files: ['**/config.ts', '**/*.spec.ts', '**/test/**/*.ts', 'libs/testing/src/**/*.ts', 'tools/**/*.ts'], rules: { 'no-restricted-syntax': 'off' } },
  {
    files: ['**/*.spec.ts', '**/test/**/*.ts', 'tools/e2e/chaos/**/*.ts', 'libs/testing/src/**/*.ts'],
    rules: {
      'no-restricted-imports': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
];
