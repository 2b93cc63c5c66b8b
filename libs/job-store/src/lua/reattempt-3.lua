--[[
  D1 (b): replace a DISPATCHED attempt that provably never started with a new
  one (DISPATCHED -> DISPATCHED). "Never started" = worker-sdk has not claimed
  the attempt's dispatch_id. Atomic with worker-sdk's claim-2.lua (same slot):
  once this script names a new dispatch, a late claim of the old one sees
  "not current" and does not run; if the old one was claimed first, this
  script refuses (-5) and nothing is redispatched.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}   (lock; value = <instance>:<fence>)
  KEYS[3]  worker:claim:{<id>}           (worker-sdk claim hash {attempt, dispatch_id, worker_id})
  ARGV[1]  caller's lock token
  ARGV[2]  dispatch_id being replaced (must be the current one)
  ARGV[3]  patch: JSON object field -> encoded value (new dispatch, attempts, ...)
  ARGV[4]  now, epoch ms
  Returns  {1, {HGETALL}}      committed
           {-1}                 not_found
           {-2, {HGETALL}}      fenced
           {-4, {HGETALL}}      not DISPATCHED on that dispatch_id any more
           {-5, {HGETALL}}      the attempt was claimed by a worker (it started)
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if ARGV[1] == '' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {-2, redis.call('HGETALL', KEYS[1])}
end
if redis.call('HGET', KEYS[1], 'state') ~= 'DISPATCHED' then
  return {-4, redis.call('HGETALL', KEYS[1])}
end
local raw = redis.call('HGET', KEYS[1], 'dispatch')
if not raw then return {-4, redis.call('HGETALL', KEYS[1])} end
local d = cjson.decode(raw)
if d['dispatchId'] ~= ARGV[2] then return {-4, redis.call('HGETALL', KEYS[1])} end
if redis.call('HGET', KEYS[3], 'dispatch_id') == ARGV[2] then
  return {-5, redis.call('HGETALL', KEYS[1])}
end
local patch = cjson.decode(ARGV[3])
for k, v in pairs(patch) do
  if k ~= 'state' and k ~= 'id' and k ~= 'createdAt' then
    redis.call('HSET', KEYS[1], k, v)
  end
end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[4])
return {1, redis.call('HGETALL', KEYS[1])}
