/**
 * `reply`, or a rejection with `message` once `ms` have passed. P337: the rejection waits one more
 * I/O turn (a setImmediate, which runs after that turn's poll phase): after a stall of the event
 * loop (a CPU-bound handler, a long GC pause) the expired timer runs before the socket is read, so
 * a reply that arrived during the stall counted as none (as libs/redis does for command timeouts).
 */
export function replyWithin<T>(reply: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => setImmediate(() => reject(new Error(message))), ms);
  });
  return Promise.race([reply, timeout]).finally(() => clearTimeout(t));
}
