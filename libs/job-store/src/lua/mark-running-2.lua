--[[
  DISPATCHED -> RUNNING on a worker's start ack or first progress (BEHAVIOURS §1.4),
  without a token: the write happens only while NO job lock exists, so it is
  the same as acquire -> check -> write -> release done in one atomic step. No
  holder can be in the middle of a write, and every token anyone still holds
  (a zombie's) is already refused by the missing lock, so the fencing rule (D4)
  holds. Saves the progress handler's acquire, two reads and release (issue 7).
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}   (lock)
  ARGV[1]  dispatch_id the progress names ('' = the current attempt, CONTRACT §3)
  ARGV[2]  now, epoch ms (updatedAt)
  Returns  {1, {HGETALL}}   moved to RUNNING
           {0}              busy: a lock is held, the caller may retry shortly
           {-1}             not_found
           {-4, state}      not DISPATCHED any more (RUNNING on this attempt, or ended)
           {-5, state}      the job's attempt is another one: the progress is a stale
                            attempt's (its worker runs an attempt that has ended, P127)
]]
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local cur = redis.call('HMGET', KEYS[1], 'state', 'dispatch')
if not cur[1] then return {-1} end
if ARGV[1] ~= '' then
  local ok, d = pcall(cjson.decode, cur[2] or '')
  if not ok or type(d) ~= 'table' or d['dispatchId'] ~= ARGV[1] then return {-5, cur[1]} end
end
if cur[1] ~= 'DISPATCHED' then return {-4, cur[1]} end
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'updatedAt', ARGV[2])
return {1, redis.call('HGETALL', KEYS[1])}
