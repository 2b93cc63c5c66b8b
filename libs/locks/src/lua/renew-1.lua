-- Extend a lease only if we still hold it; never re-creates a missing key (D3).
-- KEYS[1] lock key
-- ARGV[1] token "<owner>:<fence>", ARGV[2] ttl in ms
-- returns 1 renewed; 0 key missing (expired or released); -2 held by another token (fenced)
local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
if cur ~= ARGV[1] then
  return -2
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
