import type { Redis } from 'ioredis';
import type { RedisClient } from '../src';

/** Counts the writes a client's current socket makes (one per `_write` or `_writev` call). */
export function countWrites(c: RedisClient): { writes: () => number } {
  const s = (c as Redis).stream as unknown as {
    _write: (...a: unknown[]) => void;
    _writev: (...a: unknown[]) => void;
  };
  let n = 0;
  const one = s._write.bind(s);
  const many = s._writev.bind(s);
  s._write = (...a) => {
    n++;
    one(...a);
  };
  s._writev = (...a) => {
    n++;
    many(...a);
  };
  return { writes: () => n };
}
