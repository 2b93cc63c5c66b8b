/**
 * The replies of a MULTI/EXEC (`redis.multi()…exec()`), in order. Throws when the transaction
 * was aborted (EXEC answered null) or any command in it failed, which ioredis otherwise reports
 * per command inside the reply. Keep a MULTI to one key (or one hash slot) on a Redis Cluster.
 */
export async function execReplies(exec: Promise<[Error | null, unknown][] | null>): Promise<unknown[]> {
  const results = await exec;
  if (results === null) throw new Error('redis transaction aborted');
  return results.map(([err, reply]) => {
    if (err) throw err;
    return reply;
  });
}
