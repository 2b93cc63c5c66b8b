module.exports = { ...require('../../jest.preset.cjs'), displayName: 'worker-sdk', rootDir: __dirname };
