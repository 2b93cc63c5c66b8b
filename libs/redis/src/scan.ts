import { Cluster } from 'ioredis';
import type { Redis } from 'ioredis';
import type { RedisClient } from './client';

/**
 * Every key matching `pattern`. In cluster mode SCAN only sees one node's keys, so each master is
 * scanned in turn. Keys may repeat or be missed if they change during the scan (SCAN semantics).
 */
export async function* scanKeys(c: RedisClient, pattern: string, count = 500): AsyncIterable<string> {
  const nodes: Redis[] = c instanceof Cluster ? c.nodes('master') : [c];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      for (const k of keys) yield k;
    } while (cursor !== '0');
  }
}
