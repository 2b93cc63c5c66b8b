-- Acquire a fenced lease.
-- KEYS[1] lock key, KEYS[2] fence counter key (same hash slot, D4)
-- ARGV[1] owner (instance id), ARGV[2] ttl in ms
-- returns the new fence (> 0) and sets lock = "<owner>:<fence>" with PX ttl;
--         0 when the lock is held by anyone (no fence is consumed then)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
