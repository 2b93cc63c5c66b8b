--[[
  D2: after the publish flushed, mark the current attempt published=true.
  Fenced like every write, and only for the dispatch the caller published.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}
  ARGV[1]  caller's lock token
  ARGV[2]  dispatch_id that was published
  ARGV[3]  now, epoch ms
  Returns  {1, {HGETALL}} marked (or already marked)
           {-1} not_found, {-2, {HGETALL}} fenced, {-4, {HGETALL}} the current dispatch is another one
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if ARGV[1] == '' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {-2, redis.call('HGETALL', KEYS[1])}
end
local raw = redis.call('HGET', KEYS[1], 'dispatch')
if not raw then return {-4, redis.call('HGETALL', KEYS[1])} end
local d = cjson.decode(raw)
if d['dispatchId'] ~= ARGV[2] then return {-4, redis.call('HGETALL', KEYS[1])} end
d['published'] = true
redis.call('HSET', KEYS[1], 'dispatch', cjson.encode(d), 'updatedAt', ARGV[3])
return {1, redis.call('HGETALL', KEYS[1])}
