--[[
  Create a job record once (idempotent on id).
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  job:fence:{<id>}  (seeded to 0 with the job TTL, so the lock's INCR keeps that TTL, CONTRACT §5)
  ARGV[1]  record TTL in ms (JOB_TTL)
  ARGV[2]  JSON object field -> encoded value (see codec.ts)
  Returns  {1, {HGETALL}} when created, {0, {HGETALL}} when the record already existed
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do
  redis.call('HSET', KEYS[1], k, v)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '0', 'NX', 'PX', ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
