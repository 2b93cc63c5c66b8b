--[[
  Takes one of a concurrency group's slots for a job, or files it as a waiter
  (max_concurrent_jobs, docs/decisions.md P70). Both keys share the group's
  hash tag. Waiters go first in the order they first waited: a job that is not
  among the first `free` waiters (free = limit minus holders) waits, so a slot
  freed while jobs wait goes to the longest waiter, not to a new submit.
  KEYS[1]  job:slots:{<group>}     ZSET holders (job id → when it took the slot)
  KEYS[2]  job:slotwait:{<group>}  ZSET waiters (job id → when it first waited)
  ARGV[1]  job id
  ARGV[2]  limit (≥ 1)
  ARGV[3]  now (ms)
  ARGV[4]  TTL of both keys in ms (the job TTL)
  Returns  1 the job holds a slot (taken now or before), 0 it waits
  A holder's score is refreshed at each look: the replayer leader takes a
  slot back from a PENDING holder only once its score is older than a job
  lock's TTL (a job that took its slot and never got dispatched).
]]
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
  local ahead = rank
  if not rank then ahead = redis.call('ZCARD', KEYS[2]) end
  if ahead < free then
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    if rank then redis.call('ZREM', KEYS[2], ARGV[1]) end
    return 1
  end
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 0
