--[[
  Drops holders of a concurrency group's slots that the replayer leader found
  holding their slot for nothing (max_concurrent_jobs, docs/decisions.md P70),
  each only while its score is still the one the leader read. slot-acquire-2.lua
  moves a holder's score to its look's time at every look, so a holder whose job
  took or kept its slot again after the leader's read (a redelivered submit on
  another replica, about to dispatch) keeps it: the leader's verdict was made
  on a state it no longer has. One key, so one Cluster slot.
  KEYS[1]  job:slots:{<group>}  ZSET holders (job id → when it last took or kept its slot, ms)
  ARGV     pairs: job id, the score the leader read for it
  Returns  the number of holders dropped
]]
local dropped = 0
for i = 1, #ARGV - 1, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return dropped
