--[[
  Fenced state transition (D4, D12). Refuses a write whose token is not the
  current lock value, whose state is not one the caller expected, or that the
  transition table forbids.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}   (lock; value = <instance>:<fence>)
  KEYS[3]  job:decisions:{<id>}          (safety decision history)
  ARGV[1]  caller's lock token (must be non-empty)
  ARGV[2]  comma list of states the caller expects the job to be in ('' = any)
  ARGV[3]  target state
  ARGV[4]  now, epoch ms (written to updatedAt)
  ARGV[5]  comma list of states the transition table allows into ARGV[3]
  ARGV[6]  updatedAt of the record the caller holds ('' = none): when it is still the stored
           one, nobody wrote in between, the caller's record + the patch is the new record and
           nothing is read back (issue 7: no HGETALL re-read per transition)
  ARGV[7]  '1' = release the lock (DEL) after a committed write, saving the release round trip
  ARGV[8]  decision history entry (JSON) to append, '' for none (the list keeps the last 100,
           MAX_DECISIONS in store.ts)
  ARGV[9]  record TTL in ms (for a history list that did not exist yet)
  ARGV[10] intermediate state ('' = none): current -> ARGV[10] -> ARGV[3] as one atomic
           write, each step checked against the table (e.g. PENDING -> SCHEDULED -> DISPATCHED
           when the route is known at once, issue 7); nobody can observe the middle state
  ARGV[11] comma list of states the transition table allows into ARGV[10]
  ARGV[12..] patch: field, encoded value, ... (state, id, createdAt, updatedAt are ignored)
  Returns  {1, previous_state}                    committed, the caller's record was current
           {1, previous_state, {HGETALL}}         committed, record read back
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

local cur = redis.call('HMGET', KEYS[1], 'state', 'updatedAt')
local current = cur[1]
if not current then return {-1} end

if ARGV[1] == '' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {-2, current, redis.call('HGETALL', KEYS[1])}
end
if ARGV[2] ~= '' and not inList(ARGV[2], current) then
  return {-4, current, redis.call('HGETALL', KEYS[1])}
end
if ARGV[10] ~= '' then
  if not inList(ARGV[11], current) or not inList(ARGV[5], ARGV[10]) then
    return {-3, current, redis.call('HGETALL', KEYS[1])}
  end
elseif not inList(ARGV[5], current) then
  return {-3, current, redis.call('HGETALL', KEYS[1])}
end

local args = {'state', ARGV[3], 'updatedAt', ARGV[4]}
for i = 12, #ARGV - 1, 2 do
  local k = ARGV[i]
  if k ~= 'state' and k ~= 'id' and k ~= 'createdAt' and k ~= 'updatedAt' then
    args[#args + 1] = k
    args[#args + 1] = ARGV[i + 1]
  end
end
redis.call('HSET', KEYS[1], unpack(args))
if ARGV[8] ~= '' then
  local n = redis.call('RPUSH', KEYS[3], ARGV[8])
  if n == 1 then
    redis.call('PEXPIRE', KEYS[3], ARGV[9])
  elseif n > 100 then
    redis.call('LTRIM', KEYS[3], -100, -1)
  end
end
if ARGV[7] == '1' then redis.call('DEL', KEYS[2]) end
if ARGV[6] ~= '' and cur[2] == ARGV[6] then return {1, current} end
return {1, current, redis.call('HGETALL', KEYS[1])}
