// A child's stdout and stderr into one log file (the launcher's .cordum/logs/<name>.log).
//
// Piped with their default `end`, the first stream to end closed the file, and the other's
// last line (often why the service exited) was written after the end: an uncaught error that
// made the launcher stop every service (P168). Here the file ends once the child has closed
// both streams, and a write that fails (a full disk) drops lines instead of throwing.

/** Pipes `child`'s stdout and stderr into `log` (a WriteStream) and ends it when the child closes. */
export function pipeChildToLog(child, log) {
  log.on('error', () => undefined);
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  child.once('close', () => log.end());
}
