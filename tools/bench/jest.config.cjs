// The bench's CI smoke test: runs `npm run bench -- --smoke` against the built
// bundles (dist/apps, `npm run build`) and checks that every figure is there.
module.exports = { ...require('../../jest.preset.cjs'), displayName: 'bench', rootDir: __dirname };
