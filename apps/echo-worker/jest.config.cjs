module.exports = { ...require('../../jest.preset.cjs'), displayName: 'echo-worker', rootDir: __dirname };
