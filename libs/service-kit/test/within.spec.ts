import { valueWithin } from '../src';

describe('valueWithin', () => {
  it('gives the value when the promise settles in time', async () => {
    await expect(valueWithin(Promise.resolve(7), 1_000)).resolves.toBe(7);
  });

  it('gives null for a rejection instead of throwing', async () => {
    await expect(valueWithin(Promise.reject(new Error('boom')), 1_000)).resolves.toBeNull();
  });

  it('gives null at the budget for a promise that never settles', async () => {
    const t0 = Date.now();
    await expect(valueWithin(new Promise<number>(() => undefined), 30)).resolves.toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
  });
});
