--[[
  D2: after the publish flushed, mark the current attempt published=true.
  Fenced like every write, and only for the dispatch the caller published.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  cordum:scheduler:job:{<id>}
  ARGV[1]  caller's lock token
  ARGV[2]  dispatch_id that was published
  ARGV[3]  now, epoch ms
  ARGV[4]  updatedAt of the record the caller holds ('' = none): when still current, nothing is read back
  ARGV[5]  '1' = release the lock (DEL) once marked: D6, the handler is done with the job
  Returns  {1}             marked, the caller's record was current
           {1, {HGETALL}}  marked (or already marked), record read back
           {-1} not_found, {-2, {HGETALL}} fenced, {-4, {HGETALL}} the current dispatch is another one
]]
local cur = redis.call('HMGET', KEYS[1], 'dispatch', 'updatedAt', 'state')
if not cur[3] then return {-1} end
if ARGV[1] == '' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {-2, redis.call('HGETALL', KEYS[1])}
end
local raw = cur[1]
if not raw then return {-4, redis.call('HGETALL', KEYS[1])} end
local d = cjson.decode(raw)
if d['dispatchId'] ~= ARGV[2] then return {-4, redis.call('HGETALL', KEYS[1])} end
d['published'] = true
redis.call('HSET', KEYS[1], 'dispatch', cjson.encode(d), 'updatedAt', ARGV[3])
if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) end
if ARGV[4] ~= '' and cur[2] == ARGV[4] then return {1} end
return {1, redis.call('HGETALL', KEYS[1])}
