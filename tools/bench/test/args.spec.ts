// The bench's scripts refuse a bad command line with exit 2 and one readable line
// on stderr (no stack trace, no silently ignored typo), and print their header on --help.
// Each case fails before any server starts, so this suite needs no Redis or NATS.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@cordum/testing';

function run(script: string, args: string[]): { status: number | null; stdout: string; stderrLines: string[] } {
  const r = spawnSync(process.execPath, [join(repoRoot, 'tools/bench', script), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderrLines: r.stderr.split('\n').filter(Boolean) };
}

describe('bench scripts: command lines', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'bench-args-'));
    writeFileSync(join(dir, 'broken.cpuprofile'), '{"nodes": 1}');
    writeFileSync(join(dir, 'notes.txt'), 'not a profile');
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ['cpuprofile-top.mjs', [], 'cpuprofile-top.mjs: give one or more .cpuprofile files or directories (try --help)'],
    ['cpuprofile-top.mjs', ['/no/such/dir'], 'cpuprofile-top.mjs: no such file or directory: /no/such/dir'],
    ['cpuprofile-top.mjs', ['--top', 'x', '.'], 'cpuprofile-top.mjs: --top needs a whole number ≥ 1, got "x"'],
    ['cpuprofile-top.mjs', ['--bogus', '.'], "cpuprofile-top.mjs: Unknown option '--bogus' (try --help)"],
    ['trace-job.mjs', ['--jobs', '0'], 'trace-job.mjs: --jobs needs a whole number ≥ 1, got "0"'],
    ['trace-job.mjs', ['--jobs'], "trace-job.mjs: Option '--jobs <value>' argument missing (try --help)"],
    ['gc-tail.mjs', ['--workers', '1.5'], 'gc-tail.mjs: --workers needs a whole number ≥ 1, got "1.5"'],
    ['gc-tail.mjs', ['--duration', 'abc'], 'gc-tail.mjs: --duration needs a number ≥ 1, got "abc"'],
    ['gc-tail.mjs', ['stray'], "gc-tail.mjs: Unexpected argument 'stray' (try --help)"],
    ['run.mjs', ['--duration', '-3'], 'npm run bench: --duration needs a non-negative number'],
    ['run.mjs', ['--nope'], 'npm run bench: unknown argument "--nope" (try --help)'],
  ])('%s %j exits 2 with one line', (script, args, line) => {
    const r = run(script, args);
    expect({ status: r.status, stderr: r.stderrLines }).toEqual({ status: 2, stderr: [line] });
  });

  it('cpuprofile-top.mjs names a file that is not a CPU profile, and a directory without any', () => {
    const broken = run('cpuprofile-top.mjs', [join(dir, 'broken.cpuprofile')]);
    expect(broken.status).toBe(2);
    expect(broken.stderrLines).toEqual([`cpuprofile-top.mjs: ${join(dir, 'broken.cpuprofile')} is not a V8 CPU profile: no nodes, samples and timeDeltas`]);
    rmSync(join(dir, 'broken.cpuprofile'));
    const none = run('cpuprofile-top.mjs', [dir]);
    expect({ status: none.status, stderr: none.stderrLines }).toEqual({ status: 2, stderr: [`cpuprofile-top.mjs: no .cpuprofile files in ${dir}`] });
  });

  it.each([
    ['cpuprofile-top.mjs', 'Summarises V8 .cpuprofile files'],
    ['trace-job.mjs', "Every Redis command of one job's lifecycle"],
    ['gc-tail.mjs', 'Where the latency tail comes from'],
    ['run.mjs', '`npm run bench`: governed throughput and latency'],
  ])('%s --help prints its header and exits 0', (script, first) => {
    const r = run(script, ['--help']);
    expect({ status: r.status, stderr: r.stderrLines }).toEqual({ status: 0, stderr: [] });
    expect(r.stdout.startsWith(first)).toBe(true);
  });
});
