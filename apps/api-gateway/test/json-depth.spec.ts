// The JSON nesting limit (http/json-depth.ts): counted levels, both container kinds, no recursion.
import { MAX_JSON_DEPTH, jsonTooDeep } from '../src/http/json-depth';

const arrays = (n: number): unknown => JSON.parse('['.repeat(n) + ']'.repeat(n)) as unknown;

it('scalars and null have no depth', () => {
  for (const v of [null, undefined, 0, 'x', true]) expect(jsonTooDeep(v, 0)).toBe(false);
});

it('counts the outermost container as level 1', () => {
  expect(jsonTooDeep({}, 1)).toBe(false);
  expect(jsonTooDeep({}, 0)).toBe(true);
  expect(jsonTooDeep({ a: [{ b: 1 }] }, 3)).toBe(false);
  expect(jsonTooDeep({ a: [{ b: 1 }] }, 2)).toBe(true);
  expect(jsonTooDeep({ a: [{ b: [] }] }, 3)).toBe(true);
});

it('finds the deep branch among shallow siblings, in objects and arrays alike', () => {
  const wide = Array.from({ length: 1_000 }, (_, i) => ({ i }));
  expect(jsonTooDeep({ wide, deep: arrays(MAX_JSON_DEPTH) })).toBe(true);
  expect(jsonTooDeep({ wide, shallow: arrays(MAX_JSON_DEPTH - 1) })).toBe(false);
  expect(jsonTooDeep([wide, { x: arrays(MAX_JSON_DEPTH) }])).toBe(true);
});

it('takes a value far deeper than JSON.stringify can, without throwing', () => {
  const deep = arrays(200_000);
  expect(() => JSON.stringify(deep)).toThrow(RangeError);
  expect(jsonTooDeep(deep)).toBe(true);
});
