// Jest transform: a `.lua` (or other text) import becomes its file contents, as esbuild's text loader does.
module.exports = {
  process(sourceText) {
    return { code: `module.exports = ${JSON.stringify(sourceText)}; module.exports.default = module.exports;` };
  },
};
