-- Token bucket shared by every gateway replica (D24). One key per tenant (or
-- client IP); the caller passes `now` so the script is deterministic.
-- Guarantee: accepted requests in any T seconds <= burst + rps * T, across
-- replicas, because every decision is this one atomic read-modify-write.
-- KEYS[1] cordum:rl:{<key>}   hash {t = tokens, ts = last refill ms}
-- ARGV[1] now (epoch ms)
-- ARGV[2] rps (tokens per second, > 0, may be fractional)
-- ARGV[3] burst (bucket capacity, >= 1)
-- ARGV[4] cost (tokens for this request, normally 1)
-- returns {1, 0} accepted; {0, retry_after_ms} rejected
local now = tonumber(ARGV[1])
local rps = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local cur = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(cur[1])
local ts = tonumber(cur[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
-- A replica whose clock is behind never refills backwards (ts only moves forward).
if now > ts then
  tokens = tokens + (now - ts) * rps / 1000
  ts = now
end
-- Also clamps a bucket after burst was lowered live.
if tokens > burst then tokens = burst end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) * 1000 / rps)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
-- 2x the time to refill from empty (CONTRACT §5); an expired bucket is a full one anyway.
redis.call('PEXPIRE', KEYS[1], math.max(1000, math.ceil(2 * burst * 1000 / rps)))
return {allowed, retry}
