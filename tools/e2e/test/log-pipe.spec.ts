// The launcher's log files (tools/stack/log-pipe.mjs, P168): a service that writes to both
// stdout and stderr and exits while the launcher is busy has both lines in its log, and the
// launcher lives on. Piped with their default `end`, the first stream to end closed the file
// and the other's line was a write after end: an uncaught error, on which the launcher stopped
// every service. Here a node process plays the launcher's part, busy for 300 ms while the
// child writes and exits, 5 times.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot, startProcess } from '@cordum/testing';

const ROUNDS = 5;

it(`a child writing to both streams and exiting while the launcher is busy: both lines logged, no error (${ROUNDS} rounds)`, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'log-pipe-'));
  try {
    const module = pathToFileURL(join(repoRoot, 'tools/stack/log-pipe.mjs')).href;
    const script = `
      import { spawn } from 'node:child_process';
      import { createWriteStream, readFileSync } from 'node:fs';
      import { once } from 'node:events';
      import { pipeChildToLog } from ${JSON.stringify(module)};
      for (let round = 0; round < ${ROUNDS}; round++) {
        const file = ${JSON.stringify(dir)} + '/svc-' + round + '.log';
        const child = spawn(process.execPath, ['-e', "process.stderr.write('err line\\\\n'); process.stdout.write('out line\\\\n')"], { stdio: ['ignore', 'pipe', 'pipe'] });
        const log = createWriteStream(file);
        pipeChildToLog(child, log);
        const until = Date.now() + 300;
        while (Date.now() < until) {} // busy, as a launcher under load: the child writes and exits meanwhile
        await once(log, 'close');
        const lines = readFileSync(file, 'utf8').split('\\n').filter(Boolean).sort();
        process.stdout.write(JSON.stringify(lines) + '\\n');
      }`;
    const p = startProcess('log-pipe', process.execPath, ['--input-type=module', '-e', script]);
    const exit = await p.waitExit(30_000);
    expect({ code: exit.code, err: p.errOutput.join('\n') }).toEqual({ code: 0, err: '' });
    expect(p.output.filter((l) => l.startsWith('['))).toEqual(Array.from({ length: ROUNDS }, () => JSON.stringify(['err line', 'out line'])));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
