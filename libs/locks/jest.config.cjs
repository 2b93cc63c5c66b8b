module.exports = { ...require('../../jest.preset.cjs'), displayName: 'locks', rootDir: __dirname };
