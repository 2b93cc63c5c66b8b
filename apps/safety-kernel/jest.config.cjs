module.exports = { ...require('../../jest.preset.cjs'), displayName: 'safety-kernel', rootDir: __dirname };
