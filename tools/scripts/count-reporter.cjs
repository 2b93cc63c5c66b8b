// Jest reporter for the plain closing line CI reads: `N passed, N failed`.
// Jest's own summary prints after every reporter, so the line is also written
// to a file that tools/scripts/test-all.sh prints last.
const fs = require('node:fs');
const path = require('node:path');

class CountReporter {
  onRunComplete(_contexts, results) {
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const skipped = results.numPendingTests + results.numTodoTests;
    const line = `${results.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`;
    process.stdout.write(`\n${line}\n`);
    const out = process.env.CORDUM_TEST_COUNTS_FILE;
    if (out) {
      fs.mkdirSync(path.dirname(out), { recursive: true });
      fs.writeFileSync(out, `${line}\n`);
    }
  }
}
module.exports = CountReporter;
