--[[
  A worker's final result (SUCCEEDED, FAILED, CANCELLED, TIMEOUT) applied without a
  lock, like mark-running-2.lua: the write happens only while NO job lock exists, so
  it is the same as acquire -> read -> check -> write -> release done in one atomic
  step. No holder can be in the middle of a write, and every token anyone still holds
  (a zombie's) is refused by the missing lock, so the fencing rule (D4) holds. Saves
  the result handler's acquire-read script and its lock (issue 7). Anything else
  (a held lock, a stale dispatch, a job not DISPATCHED/RUNNING) is left to the locked
  path, which reads the job and decides.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}   (lock)
  ARGV[1]  target state (terminal; DISPATCHED and RUNNING may move to each of them)
  ARGV[2]  dispatch_id the result names ('' = the current attempt, CONTRACT §3)
  ARGV[3]  now, epoch ms (updatedAt)
  ARGV[4..] patch: field, encoded value, ... (state, id, createdAt, updatedAt are ignored)
  Returns  {1, previous_state, {HGETALL}}   written
           {0}                              busy: a lock is held
           {-1}                             not_found
           {-4}                             not DISPATCHED or RUNNING
           {-5}                             another dispatch is current (a stale attempt's result)
           {-6}                             a SUCCEEDED result for a job whose output has a size
                                            bound (max_artifact_bytes, P71): the locked path measures it
]]
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local cur = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'maxArtifactBytes')
if not cur[1] then return {-1} end
if cur[1] ~= 'DISPATCHED' and cur[1] ~= 'RUNNING' then return {-4} end
if cur[3] and ARGV[1] == 'SUCCEEDED' then return {-6} end
if ARGV[2] ~= '' then
  local ok, d = pcall(cjson.decode, cur[2] or '')
  if not ok or type(d) ~= 'table' or d['dispatchId'] ~= ARGV[2] then return {-5} end
end
local args = {'state', ARGV[1], 'updatedAt', ARGV[3]}
for i = 4, #ARGV - 1, 2 do
  local k = ARGV[i]
  if k ~= 'state' and k ~= 'id' and k ~= 'createdAt' and k ~= 'updatedAt' then
    args[#args + 1] = k
    args[#args + 1] = ARGV[i + 1]
  end
end
redis.call('HSET', KEYS[1], unpack(args))
return {1, cur[1], redis.call('HGETALL', KEYS[1])}
