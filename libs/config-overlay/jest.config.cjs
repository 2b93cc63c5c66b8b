module.exports = { ...require('../../jest.preset.cjs'), displayName: 'config-overlay', rootDir: __dirname };
