-- Reads a velocity window without recording anything (Evaluate, Explain, Simulate; D20).
-- KEYS[1]  window sorted set (see velocity-record-1.lua)
-- ARGV[1]  now (ms)   ARGV[2] window (ms)   ARGV[3] max requests   ARGV[4] job id
-- Returns {over, count, retry_after_ms} with the same meaning as velocity-record-1.lua:
-- a job already in the window is never over; otherwise over iff the window is full.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local floor = '(' .. tostring(now - window)
local count = redis.call('ZCOUNT', KEYS[1], floor, '+inf')
local score = redis.call('ZSCORE', KEYS[1], ARGV[4])
if score and tonumber(score) > now - window then
  return {0, count, 0}
end
if count < max then
  return {0, count, 0}
end
-- A place frees when the entry of rank count − max leaves (P332; see velocity-record-1.lua).
local freeing = redis.call('ZRANGEBYSCORE', KEYS[1], floor, '+inf', 'WITHSCORES', 'LIMIT', count - max, 1)
local retry = window
if freeing[2] then retry = tonumber(freeing[2]) + window - now end
if retry < 1 then retry = 1 end
return {1, count, retry}
