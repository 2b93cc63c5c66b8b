// `npm run bench -- --smoke` proves every part works, so its exit code says when one did not
// (P169): a part that fails is recorded in the JSON and the run goes on (what a measuring run
// wants), and the smoke run then exits 1 naming it. Before, it exited 0 with "error" rows.
// Here no service can start (their NODE_OPTIONS require a file that does not exist).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, startProcess } from '@cordum/testing';

it('a smoke run whose stack cannot start exits 1 with one line naming the part, after writing its results', async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-smoke-exit-'));
  try {
    const bench = startProcess('bench', process.execPath, [join(repoRoot, 'tools/bench/run.mjs'), '--smoke', '--skip-baselines', '--skip-safety', '--no-pass2', '--no-growth', '--node-options', '--require /nonexistent', '--out', out]);
    const exit = await bench.waitExit(120_000);
    expect(exit.code).toBe(1);
    expect(bench.output.find((l) => l.startsWith('bench: smoke: '))).toMatch(/^bench: smoke: 1 part\(s\) failed: stack\.pass1: .*exited/);
    expect(readdirSync(out).filter((f) => /^smoke-.*\.json$/.test(f))).toHaveLength(1);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}, 150_000);
