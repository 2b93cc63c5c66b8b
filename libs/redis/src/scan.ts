import { masters, type RedisClient } from './client';

/**
 * Every key matching `pattern`. In cluster mode SCAN only sees one node's keys, so each master is
 * scanned in turn. Keys may repeat or be missed if they change during the scan (SCAN semantics).
 */
export async function* scanKeys(c: RedisClient, pattern: string, count = 500): AsyncIterable<string> {
  for (const node of masters(c)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      for (const k of keys) yield k;
    } while (cursor !== '0');
  }
}
