import { Latch, within } from '../src/wait';

describe('within', () => {
  it('resolves with the promise when it settles first', async () => {
    await expect(within(Promise.resolve(7), 1_000, 'too slow')).resolves.toBe(7);
  });

  it('rejects with the message at the timeout, a function message read then', async () => {
    let progress = 0;
    const never = new Promise<number>(() => undefined);
    const p = within(never, 20, () => `stalled at ${progress}`);
    progress = 3;
    await expect(p).rejects.toThrow('stalled at 3');
  });

  it('passes a rejection of the promise through', async () => {
    await expect(within(Promise.reject(new Error('boom')), 1_000, 'too slow')).rejects.toThrow('boom');
  });

  it('times a latch out with its own message', async () => {
    await expect(new Latch().wait(10)).rejects.toThrow('latch not opened within 10 ms');
  });
});
