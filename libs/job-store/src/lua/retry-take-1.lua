--[[
  Takes a due job:retry entry for the replayer (decisions.md P338): removes it only while it is
  still the entry the caller read (same score). A replayer pass that outlived its leadership (a
  frozen leader, one whose lease was revoked) removed by id alone, so it deleted the entry a new
  attempt's retryable failure had filed meanwhile and drove the job at once, skipping its backoff.
  KEYS[1]  job:retry  sorted set (member = job id, score = due at, ms)
  ARGV[1]  job id
  ARGV[2]  the score read
  Returns  1 taken, 0 gone or re-filed at another time (left as it is)
]]
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
