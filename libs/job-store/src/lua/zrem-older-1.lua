--[[
  Removes members of one sorted set only while their score is below a bound
  (index-writer.ts, Redis Cluster, P274): a job's `job:active:<from>` entry goes
  when the job leaves <from>, unless the entry is newer than that move, which
  means another writer has since moved the job back into <from> (a retry sent
  while this writer's removal was held up between its two phases): that entry
  is the job's live one and stays.
  KEYS[1]  the sorted set
  ARGV     bound, member, bound, member, ... (bound: epoch ms of the move)
  Returns  how many were removed
]]
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if s and tonumber(s) < tonumber(ARGV[i]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i + 1])
  end
end
return n
