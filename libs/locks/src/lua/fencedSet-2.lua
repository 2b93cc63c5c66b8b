-- Generic fenced write: SET target only while the caller's lease is current.
-- Shows the rule every fenced script follows (see FENCE_CHECK_LUA in fencing.ts).
-- KEYS[1] lock key, KEYS[2] target key (same hash slot as the lock)
-- ARGV[1] token "<owner>:<fence>", ARGV[2] value
-- returns 1 written; -2 fenced (lock missing or held by another token; nothing written)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -2
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
