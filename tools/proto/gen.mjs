#!/usr/bin/env node
// Generates TypeScript wire types from proto/ into libs/protocol/src/gen with
// buf + protoc-gen-es (both from npm, no network). `--check` regenerates into a
// temporary folder and fails when the committed code differs (stale codegen).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('../..', import.meta.url).pathname;
const outDir = join(root, 'libs/protocol/src/gen');
const check = process.argv.includes('--check');
const bin = join(root, 'node_modules/.bin');

function generate(target) {
  const template = readFileSync(join(root, 'buf.gen.yaml'), 'utf8').replace('out: libs/protocol/src/gen', `out: ${target}`);
  const tplFile = join(mkdtempSync(join(tmpdir(), 'bufgen-')), 'buf.gen.yaml');
  writeFileSync(tplFile, template);
  execFileSync(join(bin, 'buf'), ['generate', '--template', tplFile], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
  });
}

function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

if (!check) {
  generate(outDir);
  console.log(`generated ${listFiles(outDir).length} files into ${relative(root, outDir)}`);
} else {
  const tmp = mkdtempSync(join(tmpdir(), 'protogen-'));
  try {
    generate(tmp);
    const want = listFiles(tmp);
    let have = [];
    try { have = listFiles(outDir); } catch { /* missing dir = stale */ }
    const stale = [];
    for (const f of new Set([...want, ...have])) {
      let a = null, b = null;
      try { a = readFileSync(join(tmp, f), 'utf8'); } catch { /* absent */ }
      try { b = readFileSync(join(outDir, f), 'utf8'); } catch { /* absent */ }
      if (a !== b) stale.push(f);
    }
    if (stale.length) {
      console.error(`generated code is stale (run npm run proto:gen): ${stale.join(', ')}`);
      process.exit(1);
    }
    console.log(`proto check ok: ${want.length} generated files up to date`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
