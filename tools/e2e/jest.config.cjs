// End-to-end and deployment-description tests: real processes from dist/apps
// (built by `npm run build`), each file with its own redis-server and nats-server.
module.exports = { ...require('../../jest.preset.cjs'), displayName: 'e2e', rootDir: __dirname };
