--[[
  Fenced state transition (D4, D12). Refuses a write whose token is not the
  current lock value, whose state is not one the caller expected, or that the
  transition table forbids.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}   (lock; value = <instance>:<fence>)
  ARGV[1]  caller's lock token (must be non-empty)
  ARGV[2]  comma list of states the caller expects the job to be in ('' = any)
  ARGV[3]  target state
  ARGV[4]  patch: JSON object field -> encoded value
  ARGV[5]  now, epoch ms (written to updatedAt)
  ARGV[6]  comma list of states the transition table allows into ARGV[3]
  Returns  {1, previous_state, {HGETALL}}        committed
           {-1}                                   not_found
           {-2, current_state, {HGETALL}}        fenced (stale or missing token)
           {-3, current_state, {HGETALL}}        illegal_transition
           {-4, current_state, {HGETALL}}        state_mismatch
]]
local function inList(list, s)
  for item in string.gmatch(list, '([^,]+)') do
    if item == s then return true end
  end
  return false
end

local current = redis.call('HGET', KEYS[1], 'state')
if not current then return {-1} end

local lockValue = redis.call('GET', KEYS[2])
if ARGV[1] == '' or lockValue ~= ARGV[1] then
  return {-2, current, redis.call('HGETALL', KEYS[1])}
end
if ARGV[2] ~= '' and not inList(ARGV[2], current) then
  return {-4, current, redis.call('HGETALL', KEYS[1])}
end
if not inList(ARGV[6], current) then
  return {-3, current, redis.call('HGETALL', KEYS[1])}
end

local patch = cjson.decode(ARGV[4])
for k, v in pairs(patch) do
  if k ~= 'state' and k ~= 'id' and k ~= 'createdAt' then
    redis.call('HSET', KEYS[1], k, v)
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updatedAt', ARGV[5])
return {1, current, redis.call('HGETALL', KEYS[1])}
