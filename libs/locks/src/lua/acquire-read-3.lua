-- Acquire a fenced lease and read a hash guarded by it, in one atomic step.
-- Same lease semantics as acquire-2.lua; the read happens after the lock is
-- set, so no write by another holder can come between the two (issue 7: one
-- round trip instead of acquire + HGETALL).
-- KEYS[1] lock key, KEYS[2] fence counter key, KEYS[3] hash to read (all one hash slot, D4)
-- ARGV[1] owner (instance id), ARGV[2] ttl in ms
-- returns {fence, {HGETALL}} with lock = "<owner>:<fence>" PX ttl;
--         {0} when the lock is held by anyone (no fence is consumed, nothing is read)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return {fence, redis.call('HGETALL', KEYS[3])}
