#!/usr/bin/env node
// Summarises V8 .cpuprofile files (from `npm run bench -- --cpu-prof DIR`): self
// time by function and by module (package under node_modules, the service bundle,
// or node internals), so a hot path shows up without opening DevTools.
//
//   node tools/bench/cpuprofile-top.mjs FILE_OR_DIR... [--top N]
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { scriptArgs, usageError } from './lib/args.mjs';

const TOOL = 'cpuprofile-top.mjs';
const { values, positionals } = scriptArgs(import.meta.url, process.argv.slice(2), { top: { type: 'number', default: 25, min: 1, integer: true } }, { positionals: true });
const top = values.top;
if (positionals.length === 0) usageError(TOOL, 'give one or more .cpuprofile files or directories (try --help)');

function files(p) {
  if (!existsSync(p)) usageError(TOOL, `no such file or directory: ${p}`);
  if (statSync(p).isDirectory()) return readdirSync(p).flatMap((f) => files(join(p, f)));
  return p.endsWith('.cpuprofile') ? [p] : [];
}

function readProfile(f) {
  try {
    const prof = JSON.parse(readFileSync(f, 'utf8'));
    if (!Array.isArray(prof.nodes) || !Array.isArray(prof.samples) || !Array.isArray(prof.timeDeltas)) throw new Error('no nodes, samples and timeDeltas');
    return prof;
  } catch (e) {
    return usageError(TOOL, `${f} is not a V8 CPU profile: ${String(e?.message ?? e).split('\n')[0]}`);
  }
}

const found = positionals.flatMap(files);
if (found.length === 0) usageError(TOOL, `no .cpuprofile files in ${positionals.join(', ')}`);

function moduleOf(url) {
  if (!url) return '(native/gc)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith('node:')) return url.split('/')[0];
  const dist = /dist\/apps\/([^/]+)\//.exec(url);
  return dist ? `bundle:${dist[1]}` : url;
}

for (const f of found) {
  const prof = readProfile(f);
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFn = new Map();
  const byMod = new Map();
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const fn = `${cf.functionName || '(anonymous)'} ${moduleOf(cf.url)}${cf.url && !cf.url.includes('node_modules') ? `:${cf.lineNumber + 1}` : ''}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + us);
    byMod.set(moduleOf(cf.url), (byMod.get(moduleOf(cf.url)) ?? 0) + us);
  }
  const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  const idle = [...byFn].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  process.stdout.write(`\n== ${f}: ${(total / 1e6).toFixed(1)} s sampled, busy ${((100 * (total - idle)) / total).toFixed(1)}%\n`);
  process.stdout.write('-- by module\n');
  for (const [k, v] of [...byMod].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`${pct(v)}  ${k}\n`);
  process.stdout.write('-- by function (self)\n');
  for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(v)}  ${k}\n`);
}
