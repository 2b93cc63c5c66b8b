--[[
  Create a job record once (idempotent on id), with its first safety decision.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  job:fence:{<id>}      (seeded to 0 with the job TTL, so the lock's INCR keeps that TTL, CONTRACT §5)
  KEYS[3]  job:decisions:{<id>}  (history; same tag)
  ARGV[1]  record TTL in ms (JOB_TTL)
  ARGV[2]  decision history entry (JSON) to append when created, '' for none
  ARGV[3..] field, encoded value, field, encoded value, ... (see codec.ts)
  Returns  {1}                    created: the record is exactly the fields passed, so the caller
                                  already holds it and nothing is read back (issue 7)
           {0, {HGETALL}}         the record already existed (a retried create): it is not touched
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '0', 'NX', 'PX', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return {1}
