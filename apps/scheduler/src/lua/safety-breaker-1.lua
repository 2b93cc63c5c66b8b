--[[
  Circuit breaker around the safety kernel, shared by every scheduler replica
  (D21, CONTRACT §5 `cordum:cb:safety:failures`). One hash, one atomic step per
  call, so replicas agree on the state:
    closed     no `ou`; `f` failures counted since `ws` (window start)
    open       now < `ou` (open until): calls are refused without reaching the kernel
    half-open  now >= `ou`: one probe per `probe_ms` (`np` = next probe time); `s`
               successful probes so far; `close_n` of them close the breaker, any
               failed probe opens it again for `open_ms`
  A success while closed resets the count: it takes `threshold` CONSECUTIVE
  failures within `window_ms` to open. The key expires `open_ms + window_ms`
  after the last write, so an idle breaker forgets old failures.
  KEYS[1]  cordum:cb:safety:failures
  ARGV[1]  op: acquire | success | failure
  ARGV[2]  now (epoch ms, caller's clock)
  ARGV[3]  threshold   ARGV[4] window_ms   ARGV[5] open_ms
  ARGV[6]  probe_ms    ARGV[7] close_n
  ARGV[8]  '1' when the reported call was a half-open probe (success/failure)
  acquire returns {code, failures}: 0 closed (call), 1 probe (call), 2 open (refuse), 3 half-open, slot taken (refuse)
  success/failure return {state, transition}: state 0 closed, 1 half-open, 2 open;
           transition 1 when this call opened or closed the breaker, else 0
]]
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local openMs = tonumber(ARGV[5])
local probeMs = tonumber(ARGV[6])
local closeN = tonumber(ARGV[7])
local probe = ARGV[8] == '1'
local ttl = openMs + window

local h = redis.call('HMGET', key, 'f', 'ws', 'ou', 'np', 's')
local f = tonumber(h[1]) or 0
local ws = tonumber(h[2])
local ou = tonumber(h[3])
local np = tonumber(h[4]) or 0
local s = tonumber(h[5]) or 0

local function open()
  redis.call('HSET', key, 'ou', now + openMs, 's', 0, 'np', 0)
  redis.call('HDEL', key, 'f', 'ws')
  redis.call('PEXPIRE', key, ttl)
end

if op == 'acquire' then
  if ou == nil then return {0, f} end
  if now < ou then return {2, f} end
  if now >= np then
    redis.call('HSET', key, 'np', now + probeMs)
    redis.call('PEXPIRE', key, ttl)
    return {1, f}
  end
  return {3, f}
end

if op == 'success' then
  if ou == nil then
    if f > 0 then redis.call('DEL', key) end
    return {0, 0}
  end
  if now < ou or not probe then return {now < ou and 2 or 1, 0} end
  s = s + 1
  if s >= closeN then
    redis.call('DEL', key)
    return {0, 1}
  end
  redis.call('HSET', key, 's', s)
  redis.call('PEXPIRE', key, ttl)
  return {1, 0}
end

if op == 'failure' then
  if ou ~= nil then
    if now < ou then return {2, 0} end
    -- half-open: a failed probe (or a call that started before the breaker opened) opens it again
    open()
    return {2, 1}
  end
  if ws == nil or now - ws > window then
    ws = now
    f = 1
  else
    f = f + 1
  end
  if f >= threshold then
    open()
    return {2, 1}
  end
  redis.call('HSET', key, 'f', f, 'ws', ws)
  redis.call('PEXPIRE', key, ttl)
  return {0, 0}
end

return redis.error_reply('unknown breaker op ' .. tostring(op))
