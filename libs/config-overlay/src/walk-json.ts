import { isPlainObject } from './merge';

/** A key's or value's place in a JSON document: object keys, and array indices as numbers. */
export type JsonPath = (string | number)[];

/**
 * Every key and value of a JSON document, depth first, with its path. `key` sees each object key
 * before its value, and answers false to leave that value out of the walk.
 */
export function walkJson(data: unknown, visit: { key?: (key: string, path: JsonPath) => boolean; value?: (value: unknown, path: JsonPath) => void }): void {
  const stack: Array<[unknown, JsonPath]> = [[data, []]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [value, path] = top;
    visit.value?.(value, path);
    if (Array.isArray(value)) value.forEach((v, i) => stack.push([v, [...path, i]]));
    else if (isPlainObject(value)) {
      for (const [k, v] of Object.entries(value)) if (visit.key?.(k, path) ?? true) stack.push([v, [...path, k]]);
    }
  }
}
