// P337: the worker's PING timeout (replyWithin) after a stall of the event loop. A PING whose reply
// arrived during the stall was counted as unanswered: the expired timer ran before the reply was
// read, and two such made the worker heartbeat draining though Redis was fine.
import { replyWithin } from '../src/within';

const stall = (ms: number): void => {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a CPU-bound handler step, a long GC pause
  }
};

it('a reply that arrived during a stall longer than the timeout, read after it, wins over the timeout', async () => {
  // The loop stalls in a check phase; the reply is read in the next turn, after that turn's timers
  // (the expired timeout) have run, as a socket read in its poll phase is.
  const reply = new Promise<string>((resolve) => {
    setImmediate(() => {
      stall(1_200);
      setImmediate(() => resolve('PONG'));
    });
  });
  await expect(replyWithin(reply, 1_000, 'no PING reply within 1000 ms')).resolves.toBe('PONG');
});

it('a reply that does not come fails with the message, one turn after the timeout', async () => {
  await expect(replyWithin(new Promise<string>(() => undefined), 50, 'no PING reply within 50 ms')).rejects.toThrow('no PING reply within 50 ms');
});
