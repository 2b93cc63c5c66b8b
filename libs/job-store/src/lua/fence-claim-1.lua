--[[
  Fences a DISPATCHED attempt the reconciler is about to end TIMEOUT for not
  starting (decisions.md P49). Atomic with worker-sdk's claim-2.lua (same
  key): if a worker already claimed the dispatch it started (D1) and nothing
  is written; otherwise the claim record is set to this attempt number under
  a dispatch id no worker sends, so a later claim of the same attempt answers
  "stale" (-1) and does not run it. A newer attempt (attempt + 1) still claims.
  KEYS[1]  worker:claim:{<id>}  hash {attempt, dispatch_id, worker_id}
  ARGV[1]  dispatch_id of the attempt
  ARGV[2]  its attempt number
  ARGV[3]  record TTL in ms
  Returns  1 fenced, 0 claimed (the attempt started)
]]
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'dispatch_id')
if cur[2] == ARGV[1] then return 0 end
if cur[1] and tonumber(cur[1]) and tonumber(cur[1]) > tonumber(ARGV[2]) then return 1 end
redis.call('HSET', KEYS[1], 'attempt', ARGV[2], 'dispatch_id', 'fenced:' .. ARGV[1], 'worker_id', '')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
