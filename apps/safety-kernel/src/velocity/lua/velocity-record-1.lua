-- Records one job in a sliding velocity window, at most once per job id (D20).
-- KEYS[1]  window sorted set (member = job id, score = admitted at, ms)
-- ARGV[1]  now (ms)   ARGV[2] window (ms)   ARGV[3] max requests   ARGV[4] job id
-- Returns {over, count, retry_after_ms, added}:
--   {0, n, 0, 1}  admitted by this call: n jobs in the window
--   {0, n, 0, 0}  already admitted earlier in this window
--   {1, n, r}  over the limit, not recorded; a place frees in r ms: when the entry of rank n − max
--              leaves (the oldest when the window is exactly full; later when max was lowered
--              below n at run time, P332)
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  return {0, count, 0, 0}
end
if count < max then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return {0, count + 1, 0, 1}
end
local freeing = redis.call('ZRANGE', KEYS[1], count - max, count - max, 'WITHSCORES')
local retry = window
if freeing[2] then retry = tonumber(freeing[2]) + window - now end
if retry < 1 then retry = 1 end
return {1, count, retry}
