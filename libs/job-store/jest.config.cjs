module.exports = { ...require('../../jest.preset.cjs'), displayName: 'job-store', rootDir: __dirname };
