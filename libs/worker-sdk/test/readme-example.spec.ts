// The worker SDK README's example is what users copy: it must compile against the exported API
// as it is now (P323: a renamed option or export would only show in their build). The first ts
// block is extracted with a stub for `summarise` (the README's "your code") and type-checked by
// tsc with the repository's settings.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '@cordum/testing';

it('the README example type-checks against the SDK and service-kit as exported', () => {
  const readme = readFileSync(join(repoRoot, 'libs/worker-sdk/README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?)\n```/.exec(readme)?.[1];
  expect(block).toContain('createWorker');
  // Inside the repository, so the workspace paths and the base tsconfig resolve as for any source.
  const dir = mkdtempSync(join(repoRoot, 'libs/worker-sdk/test/.readme-'));
  try {
    const stub = 'declare function summarise(text: string, o: { signal: AbortSignal }): Promise<string>;\n';
    writeFileSync(join(dir, 'example.ts'), `${stub}${block ?? ''}\n`);
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../../../../tsconfig.base.json', compilerOptions: { noEmit: true, types: ['node'] }, files: ['example.ts'], include: ['../../../../types/**/*.d.ts'] }));
    const r = spawnSync(process.execPath, [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { encoding: 'utf8', timeout: 120_000 });
    expect({ status: r.status, out: `${r.stdout}${r.stderr}`.trim() }).toEqual({ status: 0, out: '' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 150_000);
