import { createLogThrottle } from '../src';

test('a key may be logged once per interval; other keys on their own; past maxKeys all are forgotten', () => {
  const may = createLogThrottle(60_000, 2);
  expect(may('a')).toBe(true);
  expect(may('a')).toBe(false);
  expect(may('b')).toBe(true);
  expect(may('b')).toBe(false);
  // a third key: the two remembered are forgotten (bounded memory), so `a` is said again
  expect(may('c')).toBe(true);
  expect(may('a')).toBe(true);
  // an interval of 0: every time
  const always = createLogThrottle(0);
  expect([always('x'), always('x')]).toEqual([true, true]);
});
