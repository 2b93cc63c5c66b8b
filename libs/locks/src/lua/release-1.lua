-- Release a lease only if we still hold it.
-- KEYS[1] lock key
-- ARGV[1] token "<owner>:<fence>"
-- returns 1 deleted; 0 not ours or already gone
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
